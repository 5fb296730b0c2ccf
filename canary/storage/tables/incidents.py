"""Deploys, findings, alerts and their deliveries."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from canary.storage.tables.base import Base

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

    ``kind`` is ``self``, ``peer``, ``invariant``, ``availability``, ``no_data`` or ``equivalence``.
    ``message`` is the one line an on-call engineer reads; the numbers behind it are the other columns.
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
        sa.CheckConstraint(
            "kind IN ('self', 'peer', 'invariant', 'availability', 'no_data', 'equivalence')", name="kind"
        ),
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
