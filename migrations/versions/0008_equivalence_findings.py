"""findings may be of kind 'equivalence' (a cell's equivalence runs against its peers', issue 15);
view v_equivalence for the dashboards

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

# The cell dashboard's equivalence panel: each finding's effect against its tolerance.
VIEW = """
CREATE VIEW v_equivalence AS
SELECT f.id, f.updated_at AS time, t.cell, t.model, t.platform, t.pool, f.metric, f.effect,
       f.effect_ci_low AS ci_low, f.effect_ci_high AS ci_high,
       (f.details->>'tolerance')::float AS tolerance, f.n_observed AS n, f.p_value,
       f.resolved_at IS NULL AS open, f.message, f.created_at
FROM findings f
JOIN targets t ON t.id = f.target_id
WHERE f.kind = 'equivalence'
"""


def upgrade() -> None:
    op.drop_constraint(op.f("ck_findings_kind"), "findings", type_="check")
    op.create_check_constraint(op.f("ck_findings_kind"), "findings", KINDS)
    op.execute(VIEW)


def downgrade() -> None:
    op.execute("DROP VIEW v_equivalence")
    op.execute("DELETE FROM findings WHERE kind = 'equivalence'")
    op.drop_constraint(op.f("ck_findings_kind"), "findings", type_="check")
    op.create_check_constraint(op.f("ck_findings_kind"), "findings", BEFORE)
