"""findings may be of kind 'equivalence' (a cell's equivalence runs against its peers', issue 15)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 23:50:00
"""
from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KINDS = "kind IN ('self', 'peer', 'invariant', 'availability', 'no_data', 'equivalence')"
BEFORE = "kind IN ('self', 'peer', 'invariant', 'availability', 'no_data')"


def upgrade() -> None:
    op.drop_constraint(op.f("ck_findings_kind"), "findings", type_="check")
    op.create_check_constraint(op.f("ck_findings_kind"), "findings", KINDS)


def downgrade() -> None:
    op.execute("DELETE FROM findings WHERE kind = 'equivalence'")
    op.drop_constraint(op.f("ck_findings_kind"), "findings", type_="check")
    op.create_check_constraint(op.f("ck_findings_kind"), "findings", BEFORE)
