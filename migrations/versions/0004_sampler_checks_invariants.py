"""sampler_checks table; findings may be of kind 'invariant'

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 01:05:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sampler_checks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("sampler", sa.Text(), nullable=False),
        sa.Column("device", sa.Text(), nullable=False),
        sa.Column("jax_version", sa.Text(), nullable=False),
        sa.Column("jaxlib_version", sa.Text(), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("duration_s", sa.Float(), nullable=False),
        sa.Column("returns_kept", sa.Boolean(), nullable=False),
        sa.Column("config", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("violations", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("checked", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("reproducers", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sampler_checks")),
    )
    op.create_index(
        "ix_sampler_checks_sampler_created",
        "sampler_checks",
        ["sampler", sa.literal_column("created_at DESC")],
        unique=False,
    )
    op.drop_constraint(op.f("ck_findings_kind"), "findings", type_="check")
    op.create_check_constraint(op.f("ck_findings_kind"), "findings", "kind IN ('self', 'peer', 'invariant')")


def downgrade() -> None:
    op.execute("DELETE FROM findings WHERE kind = 'invariant'")
    op.drop_constraint(op.f("ck_findings_kind"), "findings", type_="check")
    op.create_check_constraint(op.f("ck_findings_kind"), "findings", "kind IN ('self', 'peer')")
    op.drop_index("ix_sampler_checks_sampler_created", table_name="sampler_checks")
    op.drop_table("sampler_checks")
