"""Passwords (argon2), API tokens (random, stored as sha256, scoped, revocable), team registration and login.

Never commits; raises AppError subclasses. Must not import FastAPI.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.errors import Conflict, Forbidden, NotAuthenticated
from app.models import ApiToken, Participant, Team, TokenScope, utcnow

TOKEN_PREFIX = "mdg_"
_hasher = PasswordHasher()
# verified against when the e-mail is unknown, so that login takes the same time either way
_DUMMY_HASH = _hasher.hash("not-a-real-password")


def set_password_hasher(hasher: PasswordHasher) -> PasswordHasher:
    """Swap the argon2 parameters (tests use cheap ones); returns the previous hasher."""
    global _hasher, _DUMMY_HASH
    previous, _hasher = _hasher, hasher
    _DUMMY_HASH = hasher.hash("not-a-real-password")
    return previous


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class IssuedToken:
    """A freshly created token: `token` is shown once and never stored."""

    row: ApiToken
    token: str


def create_token(
    session: Session,
    *,
    scope: TokenScope,
    participant: Participant | None = None,
    name: str = "",
    expires_at: datetime | None = None,
) -> IssuedToken:
    if scope is TokenScope.PARTICIPANT and participant is None:
        raise ValueError("a participant token needs a participant")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(
        token_hash=hash_token(token),
        prefix=token[: len(TOKEN_PREFIX) + 6],
        name=name,
        scope=scope,
        participant_id=participant.id if participant is not None else None,
        expires_at=expires_at,
    )
    session.add(row)
    session.flush()
    return IssuedToken(row=row, token=token)


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token, and for participant tokens the participant and team."""

    token: ApiToken
    participant: Participant | None
    team: Team | None

    @property
    def is_organiser(self) -> bool:
        return self.token.scope is TokenScope.ORGANISER


def authenticate(session: Session, *, token: str | None) -> Principal:
    """The principal of a bearer token; 401 for a missing, unknown, expired or revoked token."""
    if not token:
        raise NotAuthenticated()
    row = session.scalars(select(ApiToken).where(ApiToken.token_hash == hash_token(token))).one_or_none()
    now = utcnow()
    if row is None:
        raise NotAuthenticated("unknown token")
    if row.revoked_at is not None:
        raise NotAuthenticated("token revoked")
    if row.expires_at is not None and row.expires_at <= now:
        raise NotAuthenticated("token expired")
    participant = team = None
    if row.scope is TokenScope.PARTICIPANT:
        participant = row.participant
        if participant is None or not participant.is_active:
            raise NotAuthenticated("token owner is inactive")
        team = participant.team
    return Principal(token=row, participant=participant, team=team)


def require_organiser(principal: Principal) -> Principal:
    if not principal.is_organiser:
        raise Forbidden("organiser token required")
    return principal


def revoke_token(session: Session, *, token: ApiToken) -> None:
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        session.flush()


def register_team(
    session: Session, *, team_name: str, email: str, password: str, display_name: str = ""
) -> Participant:
    """A new team with its first participant (the contact). Unapproved until an organiser approves it;
    challenges that do not require approval accept it at once."""
    email = email.strip().lower()
    taken = session.scalar(
        select(func.count()).select_from(Team).where(func.lower(Team.name) == team_name.strip().lower())
    )
    if taken:
        raise Conflict(f"team name {team_name!r} is taken")
    if session.scalar(select(func.count()).select_from(Participant).where(Participant.email == email)):
        raise Conflict("this e-mail is already registered")
    team = Team(name=team_name.strip(), contact_email=email)
    participant = Participant(team=team, email=email, display_name=display_name, password_hash=hash_password(password))
    session.add(participant)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        raise Conflict("team name or e-mail already registered") from None
    return participant


def add_member(session: Session, *, team: Team, email: str, password: str, display_name: str = "") -> Participant:
    email = email.strip().lower()
    if session.scalar(select(func.count()).select_from(Participant).where(Participant.email == email)):
        raise Conflict("this e-mail is already registered")
    participant = Participant(team=team, email=email, display_name=display_name, password_hash=hash_password(password))
    session.add(participant)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        raise Conflict("this e-mail is already registered") from None
    return participant


def login(session: Session, *, email: str, password: str, ttl: timedelta) -> IssuedToken:
    participant = session.scalars(select(Participant).where(Participant.email == email.strip().lower())).one_or_none()
    if participant is None:
        verify_password(_DUMMY_HASH, password)
        raise NotAuthenticated("wrong e-mail or password")
    if not verify_password(participant.password_hash, password) or not participant.is_active:
        raise NotAuthenticated("wrong e-mail or password")
    return create_token(
        session, scope=TokenScope.PARTICIPANT, participant=participant, name="login", expires_at=utcnow() + ttl
    )
