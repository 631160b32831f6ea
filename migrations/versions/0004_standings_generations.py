"""Leaderboards rebuilt after the commit that changed them: a generation counter per stored board.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 15:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("leaderboard_snapshot") as batch:
        batch.add_column(sa.Column("generation", sa.Integer(), server_default="0", nullable=False))
        batch.add_column(sa.Column("built_generation", sa.Integer(), server_default="0", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("leaderboard_snapshot") as batch:
        batch.drop_column("built_generation")
        batch.drop_column("generation")
