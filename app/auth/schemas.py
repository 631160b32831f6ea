"""Pydantic schemas of registration, login, tokens, teams and participants."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from app.models import TokenScope
from app.types import Email, Name, Password


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


class TeamRegister(BaseModel):
    team_name: Name
    email: Email
    password: Password
    display_name: Name | None = None


class MemberCreate(BaseModel):
    email: Email
    password: Password
    display_name: Name | None = None


class LoginRequest(BaseModel):
    email: Email
    password: Password


class TokenIssued(BaseModel):
    """The token is shown in this response only; the server keeps its sha256."""

    token: str = Field(description="Send as `Authorization: Bearer <token>`.")
    token_type: str = "bearer"
    id: int
    scope: TokenScope
    expires_at: datetime | None


class RegisterResult(BaseModel):
    team: TeamRead
    participant: ParticipantRead
    token: TokenIssued


class MeRead(BaseModel):
    scope: TokenScope
    participant: ParticipantRead | None
    team: TeamRead | None
