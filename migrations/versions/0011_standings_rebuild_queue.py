"""Leaderboard rebuilds are queued tasks: a board remembers that one was sent and has not started yet, so
that landing many results sends one rebuild per phase instead of one per result.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-08 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("leaderboard_snapshot") as batch:
        batch.add_column(sa.Column("rebuild_queued_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("leaderboard_snapshot") as batch:
        batch.drop_column("rebuild_queued_at")
