"""Leaderboard standings: the ranked rows of each phase, rebuilt by app.leaderboard.standings.

Existing results get standings the next time their phase changes (or `midog-eval admin refresh-standings`).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 10:50:14.453480
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
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
        batch_op.create_index(batch_op.f("ix_leaderboard_entry_phase_id"), ["phase_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_leaderboard_entry_result_id"), ["result_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("leaderboard_entry", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_leaderboard_entry_result_id"))
        batch_op.drop_index(batch_op.f("ix_leaderboard_entry_phase_id"))

    op.drop_table("leaderboard_entry")
