"""replica membership and leader lease (issue 16)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 23:50:00
"""
from collections.abc import Sequence

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass  # reserved: filled by the change named in the title


def downgrade() -> None:
    pass
