"""MIDOG 2025 Track 2: test sets name their task; results keep balanced accuracy, ROC AUC and the official
aggregate keys.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("test_set") as batch:
        batch.add_column(sa.Column("task", sa.String(32), server_default="detection", nullable=False))
    with op.batch_alter_table("result") as batch:
        batch.add_column(sa.Column("balanced_accuracy", sa.Float(), nullable=True))
        batch.add_column(sa.Column("roc_auc", sa.Float(), nullable=True))
        batch.add_column(sa.Column("aggregates", sa.JSON(), server_default="{}", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("result") as batch:
        batch.drop_column("aggregates")
        batch.drop_column("roc_auc")
        batch.drop_column("balanced_accuracy")
    with op.batch_alter_table("test_set") as batch:
        batch.drop_column("task")
