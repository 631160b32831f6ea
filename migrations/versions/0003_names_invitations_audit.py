"""Team names unique by their confusable skeleton; invitations to join a team; the organisers' audit log.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 14:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.names import skeleton

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("team") as batch:
        batch.add_column(sa.Column("name_skeleton", sa.String(length=400), nullable=True))
    team = sa.table("team", sa.column("id", sa.Integer), sa.column("name", sa.String), sa.column("name_skeleton"))
    connection = op.get_bind()
    seen: set[str] = set()
    for team_id, name in connection.execute(sa.select(team.c.id, team.c.name).order_by(team.c.id)):
        value = skeleton(name)
        # Teams registered before this rule may already look alike: the later one keeps a distinct skeleton.
        if value in seen:
            value = f"{value}#{team_id}"
        seen.add(value)
        connection.execute(sa.update(team).where(team.c.id == team_id).values(name_skeleton=value))
    with op.batch_alter_table("team") as batch:
        batch.alter_column("name_skeleton", existing_type=sa.String(length=400), nullable=False)
        batch.create_unique_constraint(batch.f("uq_team_name_skeleton"), ["name_skeleton"])
    op.create_table(
        "team_invitation",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("team_id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("invited_by_id", sa.Integer(), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("redeemed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["invited_by_id"],
            ["participant.id"],
            name=op.f("fk_team_invitation_invited_by_id_participant"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["team_id"], ["team.id"], name=op.f("fk_team_invitation_team_id_team"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_team_invitation")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_team_invitation_token_hash")),
    )
    op.create_index(op.f("ix_team_invitation_team_id"), "team_invitation", ["team_id"], unique=False)
    op.create_table(
        "audit_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("token_id", sa.Integer(), nullable=True),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("action", sa.String(length=100), nullable=False),
        sa.Column("target", sa.String(length=200), nullable=False),
        sa.Column("target_id", sa.Integer(), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["token_id"], ["api_token.id"], name=op.f("fk_audit_event_token_id_api_token"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_event")),
    )
    op.create_index(op.f("ix_audit_event_at"), "audit_event", ["at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_audit_event_at"), table_name="audit_event")
    op.drop_table("audit_event")
    op.drop_index(op.f("ix_team_invitation_team_id"), table_name="team_invitation")
    op.drop_table("team_invitation")
    with op.batch_alter_table("team") as batch:
        batch.drop_constraint(batch.f("uq_team_name_skeleton"), type_="unique")
        batch.drop_column("name_skeleton")
