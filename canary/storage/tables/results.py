"""Cells, probe versions, runs and scores (append-only) and reference outputs.

``runs`` and ``scores`` are partitioned by day on their time column (migration 0007;
:mod:`canary.storage.partitions` creates and drops the partitions), so their primary keys
include it. ``scores`` has no foreign key to ``runs``: a day's scores and runs are dropped as whole
partitions, and a key across two partitioned tables would make every drop check the other side.
A score's ``created_at`` is its run's ``started_at``, so ``(run_id, created_at)`` finds the run
in one partition.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from canary.storage.tables.base import Base


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
    started_at: Mapped[datetime] = mapped_column(primary_key=True)  # the partition key
    status: Mapped[str] = mapped_column(sa.Text)  # "ok" | "error"
    reason: Mapped[str | None] = mapped_column(sa.Text)  # canary.errors.FailureReason
    error: Mapped[str | None] = mapped_column(sa.Text)
    http_status: Mapped[int | None] = mapped_column(sa.SmallInteger)
    latency_ms: Mapped[float] = mapped_column(sa.Float)
    served_by: Mapped[dict[str, Any]] = mapped_column(server_default=sa.text("'{}'::jsonb"))
    served_pool: Mapped[str | None] = mapped_column(sa.Text)
    output_text: Mapped[str | None] = mapped_column(sa.Text)
    # canary.storage.logprobs: zlib-compressed JSON, a quarter of the JSONB it replaced.
    token_logprobs: Mapped[bytes | None] = mapped_column(sa.LargeBinary)
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
        {"postgresql_partition_by": "RANGE (started_at)"},
    )


class ScoreRow(Base):
    """One metric's outcome for one run. ``target_id``/``metric``/``created_at`` are copied
    from the run so that "latest N per cell and metric" is one index scan."""

    __tablename__ = "scores"

    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    run_id: Mapped[int] = mapped_column(sa.BigInteger)
    target_id: Mapped[int] = mapped_column(sa.ForeignKey("targets.id"))
    probe_pk: Mapped[int] = mapped_column(sa.ForeignKey("probes.id"))
    metric: Mapped[str] = mapped_column(sa.Text)
    passed: Mapped[bool] = mapped_column(sa.Boolean)
    value: Mapped[float | None] = mapped_column(sa.Float)
    detail: Mapped[dict[str, Any]] = mapped_column(server_default=sa.text("'{}'::jsonb"))
    created_at: Mapped[datetime] = mapped_column(primary_key=True)  # the partition key

    __table_args__ = (
        sa.Index("ix_scores_target_metric_created", "target_id", "metric", sa.text("created_at DESC")),
        sa.Index("ix_scores_created_brin", "created_at", postgresql_using="brin"),
        sa.Index("ix_scores_run", "run_id"),
        {"postgresql_partition_by": "RANGE (created_at)"},
    )


class ReferenceOutputRow(Base):
    """A cell's reference answer for one probe version: its first successful output, replaced when
    re-established from evidence (see :func:`canary.scoring.determinism.reestablished`).

    The determinism scorer compares later temperature-0 outputs against it. It outlives the
    run's partition, so ``run_id`` is a plain number, not a foreign key.
    """

    __tablename__ = "reference_outputs"

    target_id: Mapped[int] = mapped_column(sa.ForeignKey("targets.id"), primary_key=True)
    probe_pk: Mapped[int] = mapped_column(sa.ForeignKey("probes.id"), primary_key=True)
    run_id: Mapped[int] = mapped_column(sa.BigInteger)
    output_text: Mapped[str] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(server_default=sa.func.now())
