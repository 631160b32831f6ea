"""Test sets record every file by content: inputs (manifest and images) apart from the ground truth.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "test_set_file",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("test_set_id", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("path", sa.String(length=1024), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["test_set_id"], ["test_set.id"], name=op.f("fk_test_set_file_test_set_id_test_set"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_test_set_file")),
        sa.UniqueConstraint("test_set_id", "path", name=op.f("uq_test_set_file_test_set_id_path")),
    )
    with op.batch_alter_table("test_set_file") as batch:
        batch.create_index(batch.f("ix_test_set_file_sha256"), ["sha256"], unique=False)
        batch.create_index(batch.f("ix_test_set_file_test_set_id"), ["test_set_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("test_set_file") as batch:
        batch.drop_index(batch.f("ix_test_set_file_test_set_id"))
        batch.drop_index(batch.f("ix_test_set_file_sha256"))
    op.drop_table("test_set_file")
