"""Teams, their participants and API tokens (stored as sha256; scope participant or organiser)."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.models.base import Base, TimestampMixin, UTCDateTime, enum_column


class TokenScope(enum.StrEnum):
    PARTICIPANT = "participant"
    ORGANISER = "organiser"


class Team(TimestampMixin, Base):
    __tablename__ = "team"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    contact_email: Mapped[str] = mapped_column(String(254))
    # challenges with requires_approval accept submissions only from approved teams
    is_approved: Mapped[bool] = mapped_column(Boolean, default=False)
    is_disqualified: Mapped[bool] = mapped_column(Boolean, default=False)

    participants: Mapped[list[Participant]] = relationship(back_populates="team", order_by="Participant.id")


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
