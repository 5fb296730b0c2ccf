"""time-partitioned runs and scores (one partition per day), compressed token logprobs, detection's observations

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 23:50:00

Both tables are rebuilt as partitioned tables and every row is copied over:

1. Drop what names the old tables (the failed-samples view, the references' and scores' foreign
   keys to ``runs``), rename them ``*_old`` with their primary keys, indexes and sequences, so
   the new ones can take the names.
2. Create the partitioned tables, a default partition, and a day partition for every day from the
   oldest row (at most 60 days back; older rows land in the default partition, which retention
   empties) to three days ahead.
3. Copy the rows with their ids, restart the id sequences after them, drop the old tables and
   recreate the view. ``token_logprobs`` becomes ``bytea``: migrated rows keep their JSON as
   UTF-8 (``canary.storage.logprobs`` reads both); new rows are compressed.

The downgrade copies back into plain tables; compressed logprobs cannot be decoded in SQL and
become NULL, and references whose run is gone are deleted so the foreign key holds again.
"""

import importlib.util
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from canary.storage.partitions import create_partition_sql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MAX_DAYS_BACK = 60
DAYS_AHEAD = 3
RUN_COLUMNS = (
    "id, pass_id, target_id, probe_pk, repeat_index, started_at, status, reason, error, http_status,"
    " latency_ms, served_by, served_pool, output_text, {logprobs}, finish_reason, input_tokens,"
    " output_tokens, retry_after_s, deploy_id, session_key"
)
SCORE_COLUMNS = "id, run_id, target_id, probe_pk, metric, passed, value, detail, created_at"
INDEXES = {
    "runs": ["ix_runs_deploy", "ix_runs_started_brin", "ix_runs_target_started"],
    "scores": [
        "ix_scores_created_brin", "ix_scores_run", "ix_scores_target_metric_created",
        "ix_scores_failed_target_created",
    ],
}  # fmt: skip
FAILED_SAMPLES_JOIN = "JOIN runs r ON r.id = s.run_id"


def _failed_samples() -> str:
    """Migration 0003's ``v_failed_samples``, read from that file so the view is written once."""
    path = Path(__file__).with_name("0003_dashboards.py")
    spec = importlib.util.spec_from_file_location("canary_migration_0003", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return str(module.FAILED_SAMPLES)


def _set_aside(table: str) -> None:
    """Rename a table ``*_old`` and free every name it held (primary key, indexes, sequence)."""
    for index in INDEXES[table]:
        op.execute(f"DROP INDEX IF EXISTS {index}")
    op.execute(f"ALTER TABLE {table} DROP CONSTRAINT pk_{table} CASCADE")
    op.execute(f"ALTER TABLE {table} RENAME TO {table}_old")
    op.execute(f"ALTER SEQUENCE {table}_id_seq RENAME TO {table}_old_id_seq")


def _create_tables(partitioned: bool) -> None:
    runs_kw = {"postgresql_partition_by": "RANGE (started_at)"} if partitioned else {}
    scores_kw = {"postgresql_partition_by": "RANGE (created_at)"} if partitioned else {}
    runs_pk = ("id", "started_at") if partitioned else ("id",)
    scores_pk = ("id", "created_at") if partitioned else ("id",)
    op.create_table('runs',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('pass_id', sa.UUID(), nullable=False),
    sa.Column('target_id', sa.Integer(), nullable=False),
    sa.Column('probe_pk', sa.Integer(), nullable=False),
    sa.Column('repeat_index', sa.SmallInteger(), server_default='0', nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('status', sa.Text(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('http_status', sa.SmallInteger(), nullable=True),
    sa.Column('latency_ms', sa.Float(), nullable=False),
    sa.Column('served_by', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('served_pool', sa.Text(), nullable=True),
    sa.Column('output_text', sa.Text(), nullable=True),
    sa.Column('token_logprobs', sa.LargeBinary() if partitioned else postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('finish_reason', sa.Text(), nullable=True),
    sa.Column('input_tokens', sa.Integer(), nullable=True),
    sa.Column('output_tokens', sa.Integer(), nullable=True),
    sa.Column('retry_after_s', sa.Float(), nullable=True),
    sa.Column('deploy_id', sa.Text(), nullable=True),
    sa.Column('session_key', sa.Text(), nullable=True),
    sa.CheckConstraint("status IN ('ok', 'error')", name=op.f('ck_runs_status')),
    sa.ForeignKeyConstraint(['probe_pk'], ['probes.id'], name=op.f('fk_runs_probe_pk_probes')),
    sa.ForeignKeyConstraint(['target_id'], ['targets.id'], name=op.f('fk_runs_target_id_targets')),
    sa.PrimaryKeyConstraint(*runs_pk, name=op.f('pk_runs')),
    **runs_kw,
    )  # fmt: skip
    op.create_index(
        "ix_runs_deploy",
        "runs",
        ["deploy_id"],
        unique=False,
        postgresql_where=sa.text("deploy_id IS NOT NULL"),
    )
    op.create_index("ix_runs_started_brin", "runs", ["started_at"], unique=False, postgresql_using="brin")
    op.create_index(
        "ix_runs_target_started", "runs", ["target_id", sa.literal_column("started_at DESC")], unique=False
    )
    fk_run = (
        [] if partitioned
        else [sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_scores_run_id_runs'), ondelete='CASCADE')]
    )  # fmt: skip
    op.create_table('scores',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('run_id', sa.BigInteger(), nullable=False),
    sa.Column('target_id', sa.Integer(), nullable=False),
    sa.Column('probe_pk', sa.Integer(), nullable=False),
    sa.Column('metric', sa.Text(), nullable=False),
    sa.Column('passed', sa.Boolean(), nullable=False),
    sa.Column('value', sa.Float(), nullable=True),
    sa.Column('detail', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['probe_pk'], ['probes.id'], name=op.f('fk_scores_probe_pk_probes')),
    *fk_run,
    sa.ForeignKeyConstraint(['target_id'], ['targets.id'], name=op.f('fk_scores_target_id_targets')),
    sa.PrimaryKeyConstraint(*scores_pk, name=op.f('pk_scores')),
    **scores_kw,
    )  # fmt: skip
    op.create_index("ix_scores_created_brin", "scores", ["created_at"], unique=False, postgresql_using="brin")
    op.create_index("ix_scores_run", "scores", ["run_id"], unique=False)
    op.create_index(
        "ix_scores_target_metric_created",
        "scores",
        ["target_id", "metric", sa.literal_column("created_at DESC")],
        unique=False,
    )
    op.create_index(
        "ix_scores_failed_target_created",
        "scores",
        ["target_id", sa.literal_column("created_at DESC")],
        unique=False,
        postgresql_where=sa.text("NOT passed"),
    )


def _create_observations() -> None:
    """Detection's clustered observations and their hourly counts (``canary.storage.observations``),
    filled from the raw rows by the first detection round."""

    def keys() -> list[sa.Column[object]]:
        return [
            sa.Column("target_id", sa.Integer(), nullable=False),
            sa.Column("metric", sa.Text(), nullable=False),
            sa.Column("probe_pk", sa.Integer(), nullable=False),
        ]

    op.create_table(
        "observations",
        *keys(),
        sa.Column("pass_id", sa.UUID(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("target_id", "metric", "probe_pk", "pass_id", "at", name=op.f("pk_observations")),
        postgresql_partition_by="RANGE (at)",
    )
    op.create_index("ix_observations_at_brin", "observations", ["at"], postgresql_using="brin")
    op.create_table(
        "observation_rollup_hour",
        *keys(),
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("observations", sa.Integer(), nullable=False),
        sa.Column("failing", sa.Integer(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("target_id", "metric", "probe_pk", "hour", name=op.f("pk_observation_rollup_hour")),
    )
    op.create_index("ix_observation_rollup_hour_brin", "observation_rollup_hour", ["hour"], postgresql_using="brin")
    op.create_table(
        "rollup_progress",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("last_run_id", sa.BigInteger(), nullable=False),
        sa.Column("last_score_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_rollup_progress")),
    )


def _days(oldest: datetime | None, today: date) -> list[date]:
    first = max(oldest.astimezone(UTC).date(), today - timedelta(days=MAX_DAYS_BACK)) if oldest else today
    first = min(first, today)
    return [first + timedelta(days=i) for i in range((today - first).days + DAYS_AHEAD + 1)]


def _copy_back(logprobs: str) -> None:
    runs = RUN_COLUMNS.format(logprobs="token_logprobs")
    op.execute(f"INSERT INTO runs ({runs}) SELECT {RUN_COLUMNS.format(logprobs=logprobs)} FROM runs_old")
    op.execute(f"INSERT INTO scores ({SCORE_COLUMNS}) SELECT {SCORE_COLUMNS} FROM scores_old")
    for table in ("runs", "scores"):
        op.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
            f" coalesce((SELECT max(id) FROM {table}), 0) + 1, false)"
        )
    op.execute("DROP TABLE scores_old")
    op.execute("DROP TABLE runs_old")


def _rebuild(partitioned: bool) -> None:
    op.execute("DROP VIEW IF EXISTS v_failed_samples")
    op.execute("ALTER TABLE reference_outputs DROP CONSTRAINT IF EXISTS fk_reference_outputs_run_id_runs")
    _set_aside("scores")
    _set_aside("runs")
    _create_tables(partitioned)
    if partitioned:
        oldest = op.get_bind().scalar(
            sa.text(
                "SELECT least((SELECT min(started_at) FROM runs_old), (SELECT min(created_at) FROM scores_old))"
            )
        )
        _create_observations()
        for table in ("runs", "scores", "observations"):
            op.execute(f"CREATE TABLE {table}_default PARTITION OF {table} DEFAULT")
            for day in _days(oldest, datetime.now(UTC).date()):
                op.execute(create_partition_sql(table, day))
        _copy_back("convert_to(token_logprobs::text, 'UTF8')")
        join = "JOIN runs r ON r.id = s.run_id AND r.started_at = s.created_at"
        op.execute(_failed_samples().replace(FAILED_SAMPLES_JOIN, join))
    else:
        for table in ("rollup_progress", "observation_rollup_hour", "observations"):
            op.drop_table(table)
        # bytea starting with '[' is JSON moved over by the upgrade; compressed logprobs are lost.
        _copy_back(
            "CASE WHEN get_byte(token_logprobs, 0) = 91 THEN convert_from(token_logprobs, 'UTF8')::jsonb END"
        )
        op.execute("DELETE FROM reference_outputs WHERE run_id NOT IN (SELECT id FROM runs)")
        op.create_foreign_key(
            op.f("fk_reference_outputs_run_id_runs"),
            "reference_outputs",
            "runs",
            ["run_id"],
            ["id"],
            ondelete="CASCADE",
        )
        op.execute(_failed_samples())


def upgrade() -> None:
    _rebuild(partitioned=True)


def downgrade() -> None:
    _rebuild(partitioned=False)
