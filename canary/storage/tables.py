"""ORM tables. Runs and scores are append-only; schema changes go through ``migrations/``."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSONB, datetime: sa.DateTime(timezone=True)}


class TargetRow(Base):
    """A cell: (model, platform, pool) and how it is reached. Credentials are never stored."""

    __tablename__ = "targets"

    id: Mapped[int] = mapped_column(primary_key=True)
    cell: Mapped[str] = mapped_column(sa.Text, unique=True)
    model: Mapped[str] = mapped_column(sa.Text)
    platform: Mapped[str] = mapped_column(sa.Text)
    pool: Mapped[str] = mapped_column(sa.Text)
    provider: Mapped[str] = mapped_column(sa.Text)
    base_url: Mapped[str] = mapped_column(sa.Text)
    model_id: Mapped[str] = mapped_column(sa.Text)
    expected_pool: Mapped[str | None] = mapped_column(sa.Text)
    first_seen: Mapped[datetime] = mapped_column(server_default=sa.func.now())
    last_seen: Mapped[datetime] = mapped_column(server_default=sa.func.now())

    __table_args__ = (sa.Index("ix_targets_model_platform_pool", "model", "platform", "pool"),)


class ProbeRow(Base):
    """One version of a catalog probe; a changed prompt is a new row, never an update."""

    __tablename__ = "probes"

    id: Mapped[int] = mapped_column(primary_key=True)
    probe_id: Mapped[str] = mapped_column(sa.Text)
    probe_set: Mapped[str] = mapped_column(sa.Text)
    version: Mapped[int] = mapped_column(sa.Integer)
    content_hash: Mapped[str] = mapped_column(sa.Text)
    spec: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(server_default=sa.func.now())

    __table_args__ = (
        sa.UniqueConstraint("probe_id", "content_hash"),
        sa.UniqueConstraint("probe_id", "version"),
    )


class RunRow(Base):
    """One request to one cell: what was asked, who served it, what came back or why not."""

    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    pass_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    target_id: Mapped[int] = mapped_column(sa.ForeignKey("targets.id"))
    probe_pk: Mapped[int] = mapped_column(sa.ForeignKey("probes.id"))
    repeat_index: Mapped[int] = mapped_column(sa.SmallInteger, server_default="0")
    started_at: Mapped[datetime]
    status: Mapped[str] = mapped_column(sa.Text)  # "ok" | "error"
    reason: Mapped[str | None] = mapped_column(sa.Text)  # canary.errors.FailureReason
    error: Mapped[str | None] = mapped_column(sa.Text)
    http_status: Mapped[int | None] = mapped_column(sa.SmallInteger)
    latency_ms: Mapped[float] = mapped_column(sa.Float)
    served_by: Mapped[dict[str, Any]] = mapped_column(server_default=sa.text("'{}'::jsonb"))
    served_pool: Mapped[str | None] = mapped_column(sa.Text)
    output_text: Mapped[str | None] = mapped_column(sa.Text)
    token_logprobs: Mapped[list[Any] | None] = mapped_column(JSONB)
    finish_reason: Mapped[str | None] = mapped_column(sa.Text)
    input_tokens: Mapped[int | None] = mapped_column(sa.Integer)
    output_tokens: Mapped[int | None] = mapped_column(sa.Integer)
    retry_after_s: Mapped[float | None] = mapped_column(sa.Float)
    deploy_id: Mapped[str | None] = mapped_column(sa.Text)
    session_key: Mapped[str | None] = mapped_column(sa.Text)

    __table_args__ = (
        sa.CheckConstraint("status IN ('ok', 'error')", name="status"),
        sa.Index("ix_runs_target_started", "target_id", sa.text("started_at DESC")),
        sa.Index("ix_runs_started_brin", "started_at", postgresql_using="brin"),
        sa.Index("ix_runs_deploy", "deploy_id", postgresql_where=sa.text("deploy_id IS NOT NULL")),
    )


class ScoreRow(Base):
    """One metric's outcome for one run. ``target_id``/``metric``/``created_at`` are copied
    from the run so that "latest N per cell and metric" is one index scan."""

    __tablename__ = "scores"

    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    run_id: Mapped[int] = mapped_column(sa.BigInteger, sa.ForeignKey("runs.id", ondelete="CASCADE"))
    target_id: Mapped[int] = mapped_column(sa.ForeignKey("targets.id"))
    probe_pk: Mapped[int] = mapped_column(sa.ForeignKey("probes.id"))
    metric: Mapped[str] = mapped_column(sa.Text)
    passed: Mapped[bool] = mapped_column(sa.Boolean)
    value: Mapped[float | None] = mapped_column(sa.Float)
    detail: Mapped[dict[str, Any]] = mapped_column(server_default=sa.text("'{}'::jsonb"))
    created_at: Mapped[datetime]

    __table_args__ = (
        sa.Index("ix_scores_target_metric_created", "target_id", "metric", sa.text("created_at DESC")),
        sa.Index("ix_scores_created_brin", "created_at", postgresql_using="brin"),
        sa.Index("ix_scores_run", "run_id"),
    )


class ReferenceOutputRow(Base):
    """A cell's reference answer for one probe version: its first successful output.

    The determinism scorer compares later temperature-0 outputs against it.
    """

    __tablename__ = "reference_outputs"

    target_id: Mapped[int] = mapped_column(sa.ForeignKey("targets.id"), primary_key=True)
    probe_pk: Mapped[int] = mapped_column(sa.ForeignKey("probes.id"), primary_key=True)
    run_id: Mapped[int] = mapped_column(sa.BigInteger, sa.ForeignKey("runs.id", ondelete="CASCADE"))
    output_text: Mapped[str] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(server_default=sa.func.now())


# --- Detection and alerts (issue 4) ----------------------------------------------------------
ALERT_STATES = ("pending", "firing", "resolved")
DELIVERY_STATUSES = ("pending", "delivered", "failed", "gave_up")


class DeployRow(Base):
    """A change registered against some cells (a deploy, a load-balancer change, a config flip).

    ``canary_cells`` and ``baseline_cells`` hold cell names or globs; an empty ``canary_cells``
    means the change touches every cell (a front-door change). Detection links a finding to the
    deploys that started around its change point; per-deploy verdicts compare the two groups.
    """

    __tablename__ = "deploys"

    id: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    name: Mapped[str] = mapped_column(sa.Text)
    canary_cells: Mapped[list[str]] = mapped_column(ARRAY(sa.Text), server_default=sa.text("'{}'"))
    baseline_cells: Mapped[list[str]] = mapped_column(ARRAY(sa.Text), server_default=sa.text("'{}'"))
    started_at: Mapped[datetime]
    duration_s: Mapped[float | None] = mapped_column(sa.Float)
    status: Mapped[str] = mapped_column(sa.Text, server_default="running")
    created_by: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(server_default=sa.func.now())
    details: Mapped[dict[str, Any]] = mapped_column(server_default=sa.text("'{}'::jsonb"))

    __table_args__ = (sa.Index("ix_deploys_started_at", "started_at"),)


class FindingRow(Base):
    """One episode of one (cell, metric, kind): opened by the round that found it, updated by every
    round that still finds it, resolved by the first that does not (:mod:`canary.detection`).

    ``kind`` is ``self``, ``peer``, ``invariant``, ``availability`` or ``no_data``. ``message``
    is the one line an on-call engineer reads; the numbers behind it are the other columns.
    """

    __tablename__ = "findings"

    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    target_id: Mapped[int] = mapped_column(sa.ForeignKey("targets.id"))
    cell: Mapped[str] = mapped_column(sa.Text)
    metric: Mapped[str] = mapped_column(sa.Text)
    kind: Mapped[str] = mapped_column(sa.Text)
    baseline_rate: Mapped[float] = mapped_column(sa.Float)
    observed_rate: Mapped[float] = mapped_column(sa.Float)
    effect: Mapped[float] = mapped_column(sa.Float)
    effect_ci_low: Mapped[float] = mapped_column(sa.Float)
    effect_ci_high: Mapped[float] = mapped_column(sa.Float)
    n_baseline: Mapped[int] = mapped_column(sa.Integer)
    baseline_failures: Mapped[int] = mapped_column(sa.Integer)
    n_observed: Mapped[int] = mapped_column(sa.Integer)
    failures: Mapped[int] = mapped_column(sa.Integer)
    statistic: Mapped[float] = mapped_column(sa.Float)
    threshold: Mapped[float] = mapped_column(sa.Float)
    p_value: Mapped[float] = mapped_column(sa.Float)
    mde: Mapped[float | None] = mapped_column(sa.Float)
    change_point_at: Mapped[datetime | None]
    deploy_ids: Mapped[list[str]] = mapped_column(ARRAY(sa.Text), server_default=sa.text("'{}'"))
    sample_output: Mapped[str | None] = mapped_column(sa.Text)
    message: Mapped[str] = mapped_column(sa.Text)
    details: Mapped[dict[str, Any]] = mapped_column(server_default=sa.text("'{}'::jsonb"))
    created_at: Mapped[datetime]  # when the episode began (its first round)
    updated_at: Mapped[datetime] = mapped_column(server_default=sa.func.now())  # last round finding it
    resolved_at: Mapped[datetime | None]  # the round whose evidence cleared it; NULL while open

    __table_args__ = (
        sa.CheckConstraint("kind IN ('self', 'peer', 'invariant', 'availability', 'no_data')", name="kind"),
        sa.Index("ix_findings_target_metric_created", "target_id", "metric", sa.text("created_at DESC")),
        sa.Index(
            "ix_findings_open",
            "target_id",
            "metric",
            "kind",
            unique=True,
            postgresql_where=sa.text("resolved_at IS NULL"),
        ),
    )


class AlertRow(Base):
    """One (cell, metric) incident: pending -> firing -> resolved, updated in place while open.

    At most one open (pending or firing) alert per fingerprint; resolved rows stay as history,
    and the next incident on the same (cell, metric) opens a new row with the same fingerprint.
    """

    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(sa.Text)
    target_id: Mapped[int] = mapped_column(sa.ForeignKey("targets.id"))
    metric: Mapped[str] = mapped_column(sa.Text)
    state: Mapped[str] = mapped_column(sa.Text)
    started_at: Mapped[datetime]
    fired_at: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]
    last_active_at: Mapped[datetime]
    last_evaluated_at: Mapped[datetime]
    finding_id: Mapped[int | None] = mapped_column(
        sa.BigInteger, sa.ForeignKey("findings.id", ondelete="SET NULL")
    )
    summary: Mapped[str] = mapped_column(sa.Text)
    labels: Mapped[dict[str, Any]] = mapped_column(server_default=sa.text("'{}'::jsonb"))

    __table_args__ = (
        sa.CheckConstraint("state IN ('pending', 'firing', 'resolved')", name="state"),
        sa.Index(
            "uq_alerts_open_fingerprint",
            "fingerprint",
            unique=True,
            postgresql_where=sa.text("state IN ('pending', 'firing')"),
        ),
        sa.Index("ix_alerts_state", "state"),
    )


class AlertDeliveryRow(Base):
    """Outbox: one notification of one alert event to one receiver, committed with the alert change.

    ``payload`` is receiver-neutral (labels, annotations, times); each receiver renders its own
    wire format at send time, so secrets such as a PagerDuty routing key are never stored.
    """

    __tablename__ = "alert_deliveries"

    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    alert_id: Mapped[int] = mapped_column(sa.BigInteger, sa.ForeignKey("alerts.id", ondelete="CASCADE"))
    receiver: Mapped[str] = mapped_column(sa.Text)
    event: Mapped[str] = mapped_column(sa.Text)
    payload: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(sa.Text, server_default="pending")
    attempts: Mapped[int] = mapped_column(sa.Integer, server_default="0")
    next_attempt_at: Mapped[datetime]
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime]
    delivered_at: Mapped[datetime | None]

    __table_args__ = (
        sa.CheckConstraint("event IN ('firing', 'resolved')", name="event"),
        sa.CheckConstraint("status IN ('pending', 'delivered', 'failed', 'gave_up')", name="status"),
        sa.Index("ix_alert_deliveries_status_next", "status", "next_attempt_at"),
        sa.Index("ix_alert_deliveries_alert", "alert_id"),
    )


class DeliveryAttemptRow(Base):
    """Every attempt to send a delivery, successful or not, with how long it took."""

    __tablename__ = "delivery_attempts"

    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    delivery_id: Mapped[int] = mapped_column(
        sa.BigInteger, sa.ForeignKey("alert_deliveries.id", ondelete="CASCADE")
    )
    at: Mapped[datetime]
    ok: Mapped[bool] = mapped_column(sa.Boolean)
    http_status: Mapped[int | None] = mapped_column(sa.SmallInteger)
    error: Mapped[str | None] = mapped_column(sa.Text)
    duration_ms: Mapped[float] = mapped_column(sa.Float)

    __table_args__ = (sa.Index("ix_delivery_attempts_delivery", "delivery_id"),)


# --- Dashboards (issue 6) --------------------------------------------------------------------
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


# Failing samples are a sliver of all scores; this partial index lets "the latest failures of a
# cell" skip the passing rows instead of reading every score of the range.
sa.Index(
    "ix_scores_failed_target_created",
    ScoreRow.__table__.c.target_id,
    sa.text("created_at DESC"),
    postgresql_where=sa.text("NOT passed"),
)


class SamplerCheckRow(Base):
    """One ``canary sampler-check`` run: which sampler, on which device and JAX, and what it found.

    A compiler or runtime upgrade is checked like any deploy; the history of this table is the
    evidence that the sampler stayed conformant (or when it stopped).
    """

    __tablename__ = "sampler_checks"

    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[datetime] = mapped_column(server_default=sa.func.now())
    sampler: Mapped[str] = mapped_column(sa.Text)
    device: Mapped[str] = mapped_column(sa.Text)
    jax_version: Mapped[str] = mapped_column(sa.Text)
    jaxlib_version: Mapped[str] = mapped_column(sa.Text)
    passed: Mapped[bool] = mapped_column(sa.Boolean)
    duration_s: Mapped[float] = mapped_column(sa.Float)
    returns_kept: Mapped[bool] = mapped_column(sa.Boolean)
    config: Mapped[dict[str, Any]]
    violations: Mapped[dict[str, Any]]
    checked: Mapped[dict[str, Any]]
    reproducers: Mapped[dict[str, Any]]

    __table_args__ = (sa.Index("ix_sampler_checks_sampler_created", "sampler", sa.text("created_at DESC")),)
