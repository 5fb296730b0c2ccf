"""The schemas of canary.toml's subsystem sections: ``[detection]``, ``[alerts]``, ``[service]``.

Every model forbids unknown keys, and :func:`canary.config.loader.build_config` validates all of
them whenever a command loads the file, so a typo stops ``canary serve`` before it binds its
port instead of when it first leads. The subsystems take these validated models as arguments:

- ``[detection]`` -> :class:`DetectionSpec` (:mod:`canary.detection`);
- ``[alerts]`` -> :class:`AlertsSpec` with its ``[[alerts.receivers]]``
  (:class:`~canary.config.receivers.ReceiverSpec`) and the outbox's :class:`DeliveryPolicy`;
- ``[storage]`` -> :class:`StorageSpec` (retention, :mod:`canary.storage.partitions`);
- ``[service]`` -> :class:`ServiceSpec`, with ``[service.schedule]`` (:class:`ScheduleSpec`) and
  ``[service.verdict]`` (:class:`VerdictPolicy`, the deploy judgement of :mod:`canary.verdicts`).

Pure: pydantic only, no I/O, so the pure halves of detection and verdicts may import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from canary.config.receivers import ReceiverSpec


def reject_removed(data: Any, key: str, instead: str) -> Any:
    """A ``mode="before"`` check: a key that was removed names what replaced it, rather than
    failing as one of pydantic's "extra inputs"."""
    if isinstance(data, dict) and key in data:
        raise ValueError(f"'{key}' was removed: {instead}")
    return data


CRITICAL_DEFAULT = ("unexpected_script", "code_syntax", "argmax_conformance")


class DetectionSpec(BaseModel):
    """The ``[detection]`` section of canary.toml (:mod:`canary.detection`)."""

    model_config = ConfigDict(extra="forbid")

    # The budget: false alarms per cell per year on a healthy cell, shared by its metrics' tests.
    false_alarms_per_cell_year: float = Field(default=1.0, gt=0)
    history_s: float = Field(default=6 * 3600.0, gt=0)  # the sequential test looks back this far
    baseline_s: float = Field(default=7 * 86400.0, gt=0)  # each probe version's history before it
    window_s: float = Field(default=3600.0, gt=0)  # invariants and evidence samples look this far
    peer_window_s: float = Field(default=7200.0, gt=0)  # cell vs peers over this long
    min_runs: int = Field(default=30, ge=1)  # per side of a peer test
    # A probe version's observations count once it has this many before them (its own baseline).
    min_baseline_observations: int = Field(default=20, ge=1)
    min_effect: float = Field(default=0.005, ge=0, le=1)  # smallest peer gap worth a finding
    baseline_floor: float = Field(default=0.001, gt=0, lt=0.5)  # a clean history is not a zero rate
    # An incident is over once the runs since its last alarm favour health this many times over.
    resolve_likelihood_ratio: float = Field(default=20.0, gt=1)
    no_data_intervals: float = Field(default=3.0, gt=0)  # a cell silent this many intervals
    metrics: list[str] = Field(default_factory=lambda: ["*"])  # globs over metric names
    deploy_lookaround_s: float = Field(default=3600.0, ge=0)
    session_permutations: int = Field(default=999, ge=99)
    interval_s: float = Field(default=60.0, gt=0)  # `canary detect` without --once, and the service
    # Metrics that never fail on a healthy cell (a run served by the wrong pool): one failure in
    # the window is a finding, with no baseline, sample-size or effect requirement.
    invariant_metrics: list[str] = Field(default_factory=lambda: ["routing"])

    @model_validator(mode="before")
    @classmethod
    def _removed_keys(cls, data: Any) -> Any:
        # q0 was an upper confidence bound of this level; it is now the predictive rate, which
        # needs no level (canary.detection.nulls).
        return reject_removed(
            data,
            "baseline_confidence",
            "a stratum's healthy rate is now its predictive rate (f + 1/2) / (n + 1), with no level to set",
        )

    @model_validator(mode="after")
    def _windows_fit(self) -> DetectionSpec:
        if self.window_s > self.history_s:
            raise ValueError("'window_s' must not exceed 'history_s'")
        return self


@dataclass(frozen=True)
class DeliveryPolicy:
    """How hard the outbox tries: backoff bounds, the age after which to give up, claim lease and
    batch size (the delivery keys of ``[alerts]``, see :meth:`AlertsSpec.policy`)."""

    backoff_initial_s: float = 10.0
    backoff_max_s: float = 900.0
    max_age_s: float = 86400.0
    lease_s: float = 120.0
    batch_size: int = 50
    poll_s: float = 5.0


class AlertsSpec(BaseModel):
    """The ``[alerts]`` section of canary.toml, with its ``[[alerts.receivers]]``."""

    model_config = ConfigDict(extra="forbid")

    for_s: float = Field(default=300.0, ge=0)
    resolve_after_s: float = Field(default=900.0, ge=0)
    external_url: str = ""  # the canary's own URL, for links in notifications
    max_age_s: float = Field(default=86400.0, gt=0)  # give up on a delivery this old
    backoff_initial_s: float = Field(default=10.0, gt=0)
    backoff_max_s: float = Field(default=900.0, gt=0)
    lease_s: float = Field(default=120.0, gt=0)  # a claimed delivery is re-sent if not recorded by then
    batch_size: int = Field(default=50, ge=1, le=1000)
    poll_s: float = Field(default=5.0, gt=0)
    receivers: list[ReceiverSpec] = Field(default_factory=list)

    def policy(self) -> DeliveryPolicy:
        return DeliveryPolicy(
            self.backoff_initial_s,
            self.backoff_max_s,
            self.max_age_s,
            self.lease_s,
            self.batch_size,
            self.poll_s,
        )


class ScheduleSpec(BaseModel):
    """``[service.schedule]``: how the service's probe jobs are timed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    misfire_grace_s: float = Field(default=60.0, gt=0)
    pass_timeout_s: float | None = Field(default=None, gt=0)  # default: the job's interval
    burst_interval_s: float = Field(default=30.0, gt=0)
    start_spread_s: float = Field(default=30.0, ge=0)  # first runs spread over this long
    # Passes stop being admitted while the event loop wakes this much late (canary.probing.admission).
    max_loop_lag_s: float = Field(default=0.1, gt=0)
    probe_set_intervals: dict[str, float] = {}  # probe set -> interval_s overriding the cell's
    # The equivalence probes (probes/equivalence/), each cell's tests every this long; unset: never.
    equivalence_interval_s: float | None = Field(default=None, gt=0)


class VerdictPolicy(BaseModel):
    """``[service.verdict]``: how a deploy is judged (:mod:`canary.verdicts.judgement`).

    The tests are anytime-valid, so the verdict may be looked at as often as the service likes:
    a canary that does no harm FAILs with probability at most ``alpha`` over the whole window, and
    a rate metric PASSes only once its test would catch an increase of ``detect_effect`` with
    probability ``power``, a continuous one once its test would catch a dominance of
    ``detect_dominance``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    alpha: float = Field(default=0.05, gt=0, lt=1)  # false-FAIL rate per deploy, over all its looks
    power: float = Field(default=0.8, gt=0, lt=1)  # of catching `detect_effect` before a PASS
    detect_effect: float = Field(default=0.1, gt=0, lt=1)  # rate increase a PASS must rule out
    min_effect: float = Field(default=0.0, ge=0, lt=1)  # rate increase tolerated: FAIL needs more
    min_relative_shift: float = Field(default=0.2, ge=0)  # continuous: canary <=st (1 + this) x baseline
    # continuous: P(canary > (1 + shift) baseline) - P(below) a PASS must rule out
    detect_dominance: float = Field(default=0.3, gt=0, le=1)
    min_samples: int = Field(default=30, ge=1)  # per side, before any PASS
    critical_metrics: tuple[str, ...] = CRITICAL_DEFAULT
    muted_metrics: tuple[str, ...] = ("latency_ms",)
    tolerated_failures: int = Field(default=0, ge=0)
    default_duration_s: float = Field(default=900.0, gt=0)
    # The looks a deploy's equivalence.forced test is budgeted for (Bonferroni): 120 cover an hour
    # at the service's 30 s verdict interval; a deploy looked at more often loses the bound.
    equivalence_looks: int = Field(default=120, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _removed_keys(cls, data: Any) -> Any:
        # A FAIL used to need this many failing looks in a row; the e-value threshold now holds at
        # every look, so the key has no meaning left.
        return reject_removed(
            data,
            "consecutive_failures",
            "a FAIL ends a deploy at the first look whose e-value reaches its threshold, which"
            " already allows for every look",
        )

    @model_validator(mode="after")
    def _effects_ordered(self) -> VerdictPolicy:
        if self.min_effect >= self.detect_effect:
            raise ValueError("'min_effect' (tolerated) must be smaller than 'detect_effect' (to detect)")
        return self


class StorageSpec(BaseModel):
    """The ``[storage]`` section of canary.toml: how long rows are kept (:mod:`canary.storage.partitions`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    raw_retention_days: int = Field(default=14, ge=1)  # runs, scores and minute rollups
    rollup_retention_days: int = Field(default=400, ge=1)  # hour rollups
    partitions_ahead_days: int = Field(default=3, ge=1)  # day partitions the leader creates ahead


class ServiceSpec(BaseModel):
    """The ``[service]`` section of canary.toml (``canary serve``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    api_token: str | None = None  # "env:NAME"; without it every write endpoint answers 403
    # None: take a share of the cells over the live replicas; "i/N": a static share (no takeover).
    shard: str | None = None
    shutdown_grace_s: float = Field(default=10.0, ge=0)
    # The singleton duties' lease: a hung leader's duties move within 1.25 x leader_lease_s.
    leader_lease_s: float = Field(default=15.0, ge=1, le=600)
    # Replica heartbeats: a dead replica's cells are probed again within 2 x heartbeat_s.
    heartbeat_s: float = Field(default=5.0, ge=0.5, le=300)
    refresh_s: float = Field(default=5.0, gt=0)  # deploy bursts and database gauges
    verdict_interval_s: float = Field(default=30.0, gt=0)
    db_pool_size: int = Field(default=10, ge=1, le=200)
    # Results wait this long for an unreachable database (memory, then a spool file under
    # spool_dir, default <user data dir>/canary/spool); older ones are dropped, counted and logged.
    outage_buffer_s: float = Field(default=900.0, gt=0, le=7 * 86400.0)
    outage_memory_runs: int = Field(default=2000, ge=0, le=1_000_000)  # before spilling to the file
    spool_dir: str | None = None
    schedule: ScheduleSpec = ScheduleSpec()
    verdict: VerdictPolicy = VerdictPolicy()

    @model_validator(mode="before")
    @classmethod
    def _removed_keys(cls, data: Any) -> Any:
        # Leadership was an advisory lock retried every lock_retry_s; a SIGSTOPped leader kept it.
        return reject_removed(
            data,
            "lock_retry_s",
            "leadership is a lease now; set 'leader_lease_s' (a hung leader's duties move to"
            " another replica within 1.25 x leader_lease_s)",
        )

    @field_validator("shard")
    @classmethod
    def _shard_form(cls, v: str | None) -> str | None:
        # The same rule as canary.probing.scheduler.Shard.parse, checked at load.
        if v is None:
            return v
        index, _, count = v.partition("/")
        if not (index.isdigit() and count.isdigit()):
            raise ValueError(f"shard must look like i/N, got {v!r}")
        if not int(index) < int(count):
            raise ValueError(f"shard index must be in 0..{int(count) - 1}, got {int(index)}")
        return v
