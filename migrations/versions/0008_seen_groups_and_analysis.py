"""Phases name the groups their training data covered; boards store their ranking analysis.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("phase") as batch:
        batch.add_column(sa.Column("seen_groups", sa.JSON(), nullable=True))
    with op.batch_alter_table("leaderboard_snapshot") as batch:
        batch.add_column(sa.Column("analysis_json", sa.Text(), server_default="{}", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("leaderboard_snapshot") as batch:
        batch.drop_column("analysis_json")
    with op.batch_alter_table("phase") as batch:
        batch.drop_column("seen_groups")
