"""ORM tables, one module per part of the data flow. Runs and scores are append-only; schema
changes go through ``migrations/``. Importing this package registers every table on
``Base.metadata`` (what Alembic compares the migrations with)."""

from canary.storage.tables.base import NAMING, Base
from canary.storage.tables.incidents import (
    ALERT_STATES,
    DELIVERY_STATUSES,
    AlertDeliveryRow,
    AlertRow,
    DeliveryAttemptRow,
    DeployRow,
    FindingRow,
)
from canary.storage.tables.membership import CellClaimRow, LeaderLeaseRow, ReplicaRow
from canary.storage.tables.results import ProbeRow, ReferenceOutputRow, RunRow, ScoreRow, TargetRow
from canary.storage.tables.rollups import (
    ObservationDirtyRow,
    ObservationHourRow,
    ObservationRow,
    RollupProgressRow,
    RunRollupHourRow,
    RunRollupMinuteRow,
    ScoreRollupHourRow,
    ScoreRollupMinuteRow,
)
from canary.storage.tables.sampler import SamplerCheckRow

__all__ = [
    "ALERT_STATES",
    "AlertDeliveryRow",
    "AlertRow",
    "Base",
    "CellClaimRow",
    "DELIVERY_STATUSES",
    "DeliveryAttemptRow",
    "DeployRow",
    "FindingRow",
    "LeaderLeaseRow",
    "NAMING",
    "ObservationDirtyRow",
    "ObservationHourRow",
    "ObservationRow",
    "RollupProgressRow",
    "ProbeRow",
    "ReferenceOutputRow",
    "ReplicaRow",
    "RunRollupHourRow",
    "RunRollupMinuteRow",
    "RunRow",
    "SamplerCheckRow",
    "ScoreRollupHourRow",
    "ScoreRollupMinuteRow",
    "ScoreRow",
    "TargetRow",
]
