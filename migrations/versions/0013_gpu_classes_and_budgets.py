"""Phases name their GPU class (the queue of their model and container runs) and may set a compute budget.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05 13:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # No batch mode: on SQLite it would rebuild the phase table, and dropping the old one cascades to every
    # submission and evaluation of it. SQLite adds (3.35+: drops) plain columns in place.
    op.add_column("phase", sa.Column("gpu_class", sa.String(length=32), server_default="gpu", nullable=False))
    op.add_column("phase", sa.Column("gpu_budget_hours", sa.Float(), nullable=True))
    op.add_column("phase", sa.Column("team_share", sa.Float(), nullable=True))


def downgrade() -> None:
    op.drop_column("phase", "team_share")
    op.drop_column("phase", "gpu_budget_hours")
    op.drop_column("phase", "gpu_class")
