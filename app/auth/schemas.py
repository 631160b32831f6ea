"""Pydantic schemas of registration, login, tokens, teams and participants."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from app.tables import TokenScope
from app.types import Email, Name, Password, StrictInput

if TYPE_CHECKING:
    from app.auth.service import IssuedToken


class TeamRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    is_approved: bool
    is_disqualified: bool
    created_at: datetime


class ParticipantRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    team_id: int
    email: str
    display_name: str


class TeamRegister(StrictInput):
    team_name: Name
    email: Email
    password: Password
    display_name: Name | None = None


class InvitationCreate(StrictInput):
    email: Email = Field(description="The address of the person invited; only they can redeem it.")


class InvitationRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    team_id: int
    email: str
    created_at: datetime
    expires_at: datetime
    redeemed_at: datetime | None
    revoked_at: datetime | None


class InvitationIssued(InvitationRead):
    token: str = Field(description="Give this to the person invited; it is shown once, here.")


class JoinRequest(StrictInput):
    invitation: Annotated[str, StringConstraints(min_length=8, max_length=100, pattern=r"^[A-Za-z0-9_-]+$")]
    email: Email
    password: Password
    display_name: Name | None = None


class LoginRequest(StrictInput):
    email: Email
    password: Password


class TokenIssued(BaseModel):
    """The token is shown in this response only; the server keeps its sha256."""

    token: str = Field(description="Send as `Authorization: Bearer <token>`.")
    token_type: str = "bearer"
    id: int
    scope: TokenScope
    expires_at: datetime | None

    @classmethod
    def of(cls, issued: IssuedToken) -> TokenIssued:
        """The response for a token just created (app.auth.service.create_token)."""
        return cls(token=issued.token, id=issued.row.id, scope=issued.row.scope, expires_at=issued.row.expires_at)


class RegisterResult(BaseModel):
    """Registration and joining a team by invitation: the account, its team, and a login token."""

    team: TeamRead
    participant: ParticipantRead
    token: TokenIssued


class TeamRename(StrictInput):
    name: Name


class TeamDetail(BaseModel):
    """The caller's team as its members see it: who is in it and who has been invited."""

    team: TeamRead
    members: list[ParticipantRead]
    invitations: list[InvitationRead]


class MeRead(BaseModel):
    scope: TokenScope
    participant: ParticipantRead | None
    team: TeamRead | None
