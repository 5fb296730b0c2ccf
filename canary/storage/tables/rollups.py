"""Dashboard rollups and the failing-scores index."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.orm import Mapped, mapped_column

from canary.storage.tables.base import Base
from canary.storage.tables.results import ScoreRow

# Rollups maintained by canary.storage.rollups.refresh_rollups: dashboards and the status page read
# these (through the views of migration 0003) instead of scanning raw runs and scores. Rollups are
# derived data: no foreign key to targets, whose per-row check would double the cost of a refresh.


# Shared columns of the minute and hour rollups; sort_order keeps the key columns first, in the
# migration's order (declarative places a mixin's columns after the class's own).
class _ScoreRollupColumns:
    target_id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, sort_order=-2)
    metric: Mapped[str] = mapped_column(sa.Text, primary_key=True, sort_order=-1)
    runs: Mapped[int] = mapped_column(sa.Integer)
    failures: Mapped[int] = mapped_column(sa.Integer)


class _RunRollupColumns:
    target_id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, sort_order=-1)
    runs: Mapped[int] = mapped_column(sa.Integer)
    errors: Mapped[int] = mapped_column(sa.Integer)
    latency_p50_ms: Mapped[float | None] = mapped_column(sa.Float)
    latency_p95_ms: Mapped[float | None] = mapped_column(sa.Float)
    latency_max_ms: Mapped[float | None] = mapped_column(sa.Float)
    pools: Mapped[dict[str, Any]] = mapped_column(server_default=sa.text("'{}'::jsonb"))


class ScoreRollupMinuteRow(_ScoreRollupColumns, Base):
    """Runs and failures per (cell, metric, minute), recomputed whole from ``scores``."""

    __tablename__ = "score_rollup_minute"

    minute: Mapped[datetime] = mapped_column(primary_key=True)

    __table_args__ = (sa.Index("ix_score_rollup_minute_brin", "minute", postgresql_using="brin"),)


class ScoreRollupHourRow(_ScoreRollupColumns, Base):
    """Runs and failures per (cell, metric, hour): what ranges longer than two days read."""

    __tablename__ = "score_rollup_hour"

    hour: Mapped[datetime] = mapped_column(primary_key=True)

    __table_args__ = (sa.Index("ix_score_rollup_hour_brin", "hour", postgresql_using="brin"),)


class RunRollupMinuteRow(_RunRollupColumns, Base):
    """Requests, request errors, latency percentiles and served-by pool mix per (cell, minute).

    Cancelled runs (stored at shutdown) are left out: they say nothing about the cell.
    """

    __tablename__ = "run_rollup_minute"

    minute: Mapped[datetime] = mapped_column(primary_key=True)

    __table_args__ = (sa.Index("ix_run_rollup_minute_brin", "minute", postgresql_using="brin"),)


class RunRollupHourRow(_RunRollupColumns, Base):
    """:class:`RunRollupMinuteRow` per hour; percentiles are computed from the hour's runs."""

    __tablename__ = "run_rollup_hour"

    hour: Mapped[datetime] = mapped_column(primary_key=True)

    __table_args__ = (sa.Index("ix_run_rollup_hour_brin", "hour", postgresql_using="brin"),)


class ObservationRow(Base):
    """One clustered observation: a pass's scores of one metric on one probe version (or, for
    ``metric = 'availability'``, its runs and request errors), as detection counts them.

    Maintained by :mod:`canary.storage.observations`; partitioned by day on ``at`` (the first
    score's time) like ``runs`` and ``scores``, and dropped with them.
    """

    __tablename__ = "observations"

    target_id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    metric: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    probe_pk: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    pass_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    at: Mapped[datetime] = mapped_column(primary_key=True)
    n: Mapped[int] = mapped_column(sa.Integer)
    failures: Mapped[int] = mapped_column(sa.Integer)

    # Time first: every read and write is a time range, and rows rewritten in place soon
    # spread a BRIN index over every block (migration 0010).
    __table_args__ = (
        sa.PrimaryKeyConstraint("at", "target_id", "metric", "probe_pk", "pass_id"),
        {"postgresql_partition_by": "RANGE (at)"},
    )


class ObservationHourRow(Base):
    """Observations per (cell, metric, probe version, hour): what detection's week of baseline reads.

    ``observations`` counts clustered observations and ``failing`` those with a failure; ``n`` and
    ``failures`` sum their scores (runs, for availability).
    """

    __tablename__ = "observation_rollup_hour"

    target_id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    metric: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    probe_pk: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    hour: Mapped[datetime] = mapped_column(primary_key=True)
    observations: Mapped[int] = mapped_column(sa.Integer)
    failing: Mapped[int] = mapped_column(sa.Integer)
    n: Mapped[int] = mapped_column(sa.Integer)
    failures: Mapped[int] = mapped_column(sa.Integer)

    __table_args__ = (sa.PrimaryKeyConstraint("hour", "target_id", "metric", "probe_pk"),)  # see observations


class ObservationDirtyRow(Base):
    """A time range of runs or scores inserted since the last refresh of ``observations``.

    Written by statement triggers on ``runs`` and ``scores`` (migration 0009), one row per
    INSERT and in its transaction, so a refresh that reads it also sees the rows it describes;
    the refresh deletes the rows it read (:mod:`canary.storage.observations`).
    """

    __tablename__ = "observation_dirty"

    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    lo: Mapped[datetime]
    hi: Mapped[datetime]
    # The passes of the inserted rows, so a refresh regroups those alone; NULL (or a NULL
    # element, a score whose run was not found) means every observation of the range.
    passes: Mapped[list[uuid.UUID] | None] = mapped_column(ARRAY(UUID(as_uuid=True)))


class RollupProgressRow(Base):
    """How far a derived table has read ``runs`` and ``scores`` (their highest ids seen)."""

    __tablename__ = "rollup_progress"

    name: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    last_run_id: Mapped[int] = mapped_column(sa.BigInteger)
    last_score_id: Mapped[int] = mapped_column(sa.BigInteger)


# Failing samples are a sliver of all scores; this partial index lets "the latest failures of a
# cell" skip the passing rows instead of reading every score of the range.
sa.Index(
    "ix_scores_failed_target_created",
    ScoreRow.__table__.c.target_id,
    sa.text("created_at DESC"),
    postgresql_where=sa.text("NOT passed"),
)
