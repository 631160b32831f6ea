"""Teams, their participants, invitations to join a team, and API tokens (stored as sha256, scoped)."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship, validates

from app.names import skeleton
from app.tables.base import Base, TimestampMixin, UTCDateTime, enum_column


class TokenScope(enum.StrEnum):
    """participant: one team's member; organiser: reads and administers challenges; organiser_read: reads the
    organiser API (submissions across teams, workers, audit log) and changes nothing; runner: a GPU host's, good
    for the job protocol (/api/v1/runner) only: it claims jobs, reads their inputs and lands their outputs."""

    PARTICIPANT = "participant"
    ORGANISER = "organiser"
    ORGANISER_READ = "organiser_read"
    RUNNER = "runner"

    @property
    def is_organiser(self) -> bool:
        return self in (TokenScope.ORGANISER, TokenScope.ORGANISER_READ)


def _name_skeleton(context: Any) -> str:
    """The column default of inserts: computed from the row's name, whoever writes it (renames through the ORM
    keep it current with the validator below)."""
    return skeleton(context.get_current_parameters()["name"])


class Team(TimestampMixin, Base):
    __tablename__ = "team"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    # app.names.skeleton(name): two teams whose names look alike (Unicode TS #39) cannot both exist
    name_skeleton: Mapped[str] = mapped_column(String(400), unique=True, default=_name_skeleton)
    contact_email: Mapped[str] = mapped_column(String(254))
    # challenges with requires_approval accept submissions only from approved teams
    is_approved: Mapped[bool] = mapped_column(Boolean, default=False)
    is_disqualified: Mapped[bool] = mapped_column(Boolean, default=False)

    participants: Mapped[list[Participant]] = relationship(back_populates="team", order_by="Participant.id")

    @validates("name")
    def _keep_skeleton(self, _key: str, name: str) -> str:
        self.name_skeleton = skeleton(name)
        return name


class Participant(TimestampMixin, Base):
    __tablename__ = "participant"

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("team.id", ondelete="CASCADE"), index=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    display_name: Mapped[str] = mapped_column(String(100), default="")
    password_hash: Mapped[str] = mapped_column(String(255))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)

    team: Mapped[Team] = relationship(back_populates="participants")


class ApiToken(TimestampMixin, Base):
    __tablename__ = "api_token"

    id: Mapped[int] = mapped_column(primary_key=True)
    # sha256 hex of the random token; the token itself is shown once and never stored
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(100), default="")
    scope: Mapped[TokenScope] = mapped_column(enum_column(TokenScope))
    participant_id: Mapped[int | None] = mapped_column(ForeignKey("participant.id", ondelete="CASCADE"), index=True)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    participant: Mapped[Participant | None] = relationship()


class TeamInvitation(TimestampMixin, Base):
    """An invitation to join a team: its token (shown once to the member who made it, stored as sha256) lets
    the person with `email` create their own account in the team, with their own password."""

    __tablename__ = "team_invitation"

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("team.id", ondelete="CASCADE"), index=True)
    email: Mapped[str] = mapped_column(String(254))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    invited_by_id: Mapped[int | None] = mapped_column(ForeignKey("participant.id", ondelete="SET NULL"))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    redeemed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    team: Mapped[Team] = relationship()
