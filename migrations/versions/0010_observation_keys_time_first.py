"""observations and observation_rollup_hour keyed by time first; their BRIN indexes dropped

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 06:30:00

Every read and write of both tables is a time range: a round's edges (a minute of
observations), the refresh's delete and regroup of the last half hour, the hours of a week of
baseline, the hours a refresh left at zero. Their rows are rewritten in place (upserts, delete
and regroup), so a BRIN index on the time column soon covers every block: deleting the zero rows
of two hours read the whole rollup table (25,000 blocks, 0.7 s at 10 M runs), and a minute's edge
scanned the whole day partition. With the time column first in the primary key these are index
range scans, and the index costs nothing more.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# table -> (old key, new key, BRIN index, its column)
KEYS = {
    "observations": (
        "target_id, metric, probe_pk, pass_id, at", "at, target_id, metric, probe_pk, pass_id",
        "ix_observations_at_brin", "at",
    ),
    "observation_rollup_hour": (
        "target_id, metric, probe_pk, hour", "hour, target_id, metric, probe_pk",
        "ix_observation_rollup_hour_brin", "hour",
    ),
}  # fmt: skip


def _rekey(table: str, columns: str) -> None:
    op.execute(
        f"ALTER TABLE {table} DROP CONSTRAINT pk_{table}, ADD CONSTRAINT pk_{table} PRIMARY KEY ({columns})"
    )


def upgrade() -> None:
    for table, (_, time_first, brin, _) in KEYS.items():
        op.execute(f"DROP INDEX {brin}")
        _rekey(table, time_first)


def downgrade() -> None:
    for table, (old, _, brin, column) in KEYS.items():
        _rekey(table, old)
        op.execute(f"CREATE INDEX {brin} ON {table} USING brin ({column})")
