"""Phases say whether participants may read their runs' logs and how containers run (exec or invoke);
container submissions may bring a model tarball, or reuse the image of an earlier submission of their team.

Backfill: phases whose scoring options mark the test set as not hidden (public cases) show logs, the others
do not, as the API's default for a new phase.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05 09:00:00
"""

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _submission_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("model_path", sa.String(1024), nullable=True),
        sa.Column("model_filename", sa.String(255), server_default="", nullable=False),
        sa.Column("model_sha256", sa.String(64), nullable=True),
        sa.Column("model_size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("image_submission_id", sa.Integer(), nullable=True),
        sa.Column("run_mode", sa.String(16), nullable=True),
    ]


def upgrade() -> None:
    # No batch mode: on SQLite it would rebuild the phase table (for a Boolean column), and dropping the old
    # phase or submission table cascades to every submission or evaluation. SQLite adds (3.35+: drops) plain
    # columns in place.
    op.add_column("phase", sa.Column("show_logs", sa.Boolean(), server_default=sa.false(), nullable=False))
    op.add_column("phase", sa.Column("run_mode", sa.String(16), server_default="exec", nullable=False))
    for column in _submission_columns():
        op.add_column("submission", column)
    bind = op.get_bind()
    for phase_id, options in bind.execute(sa.text("SELECT id, scoring_options FROM phase")).all():
        stored = json.loads(options) if isinstance(options, str) else options
        if isinstance(stored, dict) and stored.get("hidden") is False:
            bind.execute(sa.text("UPDATE phase SET show_logs = :t WHERE id = :i"), {"t": True, "i": phase_id})


def downgrade() -> None:
    for column in reversed(_submission_columns()):
        op.drop_column("submission", column.name)
    op.drop_column("phase", "run_mode")
    op.drop_column("phase", "show_logs")
