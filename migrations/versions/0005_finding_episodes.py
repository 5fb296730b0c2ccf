"""findings are episodes (updated while open, resolved when the evidence clears); availability and no_data kinds

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 21:40:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KINDS = "kind IN ('self', 'peer', 'invariant', 'availability', 'no_data')"


def upgrade() -> None:
    op.add_column(
        "findings",
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=True),
    )
    op.add_column("findings", sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True))
    # Rows written before episodes were each one round's evidence: they are closed as they stand.
    op.execute("UPDATE findings SET updated_at = created_at, resolved_at = created_at")
    op.alter_column("findings", "updated_at", nullable=False)
    op.create_index(
        "ix_findings_open",
        "findings",
        ["target_id", "metric", "kind"],
        unique=True,
        postgresql_where=sa.text("resolved_at IS NULL"),
    )
    op.drop_constraint(op.f("ck_findings_kind"), "findings", type_="check")
    op.create_check_constraint(op.f("ck_findings_kind"), "findings", KINDS)


def downgrade() -> None:
    op.execute("DELETE FROM findings WHERE kind IN ('availability', 'no_data')")
    op.drop_constraint(op.f("ck_findings_kind"), "findings", type_="check")
    op.create_check_constraint(op.f("ck_findings_kind"), "findings", "kind IN ('self', 'peer', 'invariant')")
    op.drop_index("ix_findings_open", table_name="findings")
    op.drop_column("findings", "resolved_at")
    op.drop_column("findings", "updated_at")
