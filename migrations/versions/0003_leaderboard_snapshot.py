"""Leaderboard snapshots replace the standings rows: the rendered board of each phase, served as stored.

Boards are rebuilt the next time their phase changes (or `midog-eval admin refresh-standings`).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 11:13:44.676908
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "leaderboard_snapshot",
        sa.Column("phase_id", sa.Integer(), nullable=False),
        sa.Column("entries_json", sa.Text(), nullable=False),
        sa.Column("group_labels", sa.JSON(), nullable=False),
        sa.Column("entry_count", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["phase_id"], ["phase.id"], name=op.f("fk_leaderboard_snapshot_phase_id_phase"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("phase_id", name=op.f("pk_leaderboard_snapshot")),
    )
    with op.batch_alter_table("leaderboard_entry", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_leaderboard_entry_phase_id"))
        batch_op.drop_index(batch_op.f("ix_leaderboard_entry_result_id"))

    op.drop_table("leaderboard_entry")


def downgrade() -> None:
    op.create_table(
        "leaderboard_entry",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("phase_id", sa.Integer(), nullable=False),
        sa.Column("result_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=True),
        sa.Column("score", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["phase_id"], ["phase.id"], name=op.f("fk_leaderboard_entry_phase_id_phase"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["result_id"], ["result.id"], name=op.f("fk_leaderboard_entry_result_id_result"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_leaderboard_entry")),
        sa.UniqueConstraint("phase_id", "result_id", name=op.f("uq_leaderboard_entry_phase_id_result_id")),
    )
    with op.batch_alter_table("leaderboard_entry", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_leaderboard_entry_result_id"), ["result_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_leaderboard_entry_phase_id"), ["phase_id"], unique=False)

    op.drop_table("leaderboard_snapshot")
