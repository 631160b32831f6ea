"""Passwords (argon2), API tokens (random, stored as sha256, scoped, revocable), team registration, login and
invitations to join a team (the invitee makes their own account; nobody creates one for somebody else).

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

from app.auth.policy import check_password, normalise_email
from app.errors import Conflict, Forbidden, InvalidInput, NotAuthenticated, NotFound, TooManyRequests
from app.names import InvalidNameError, clean_name, skeleton
from app.tables import ApiToken, Participant, Submission, Team, TeamInvitation, TokenScope, utcnow

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
        return self.token.scope.is_organiser


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


def team_members(session: Session, *, team_id: int) -> list[Participant]:
    """The team's participants, oldest first."""
    return list(session.scalars(select(Participant).where(Participant.team_id == team_id).order_by(Participant.id)))


def team_invitations(session: Session, *, team_id: int) -> list[TeamInvitation]:
    """The team's invitations (redeemed, revoked and open ones), oldest first."""
    return list(
        session.scalars(select(TeamInvitation).where(TeamInvitation.team_id == team_id).order_by(TeamInvitation.id))
    )


def revoke_invitation(session: Session, *, team_id: int, invitation_id: int) -> None:
    """Revoke one of the team's invitations (again: a no-op); another team's is a 404."""
    row = session.get(TeamInvitation, invitation_id)
    if row is None or row.team_id != team_id:
        raise NotFound(f"no invitation {invitation_id} of your team")
    if row.revoked_at is None:
        row.revoked_at = utcnow()


@dataclass(frozen=True)
class NewAccount:
    """Registration or invitation fields as they will be stored: names cleaned, e-mail normalised."""

    email: str
    display_name: str
    team_name: str = ""


def check_new_account(*, email: str, password: str, display_name: str, team_name: str | None = None) -> NewAccount:
    """Every rule a new account must pass before anything is hashed or stored; InvalidInput naming the field."""
    address = normalise_email(email)
    check_password(password, email=address)
    try:
        shown = clean_name(display_name, field="display_name") if display_name else ""
        team = clean_name(team_name, field="team_name") if team_name is not None else ""
    except InvalidNameError as exc:
        raise InvalidInput(str(exc)) from None
    return NewAccount(email=address, display_name=shown, team_name=team)


def _email_free(session: Session, email: str) -> None:
    if session.scalar(select(func.count()).select_from(Participant).where(Participant.email == email)):
        raise Conflict("this e-mail is already registered")


def register_team(session: Session, *, account: NewAccount, password_hash: str) -> Participant:
    """A new team with its first participant (the contact). Unapproved until an organiser approves it;
    challenges that do not require approval accept it at once. The name must not look like an existing one."""
    look = skeleton(account.team_name)
    clash = session.scalar(select(Team.name).where(Team.name_skeleton == look))
    if clash is not None:
        raise Conflict(f"team name {account.team_name!r} looks like the existing team {clash!r}; choose another")
    _email_free(session, account.email)
    team = Team(name=account.team_name, contact_email=account.email)
    participant = Participant(
        team=team,
        email=account.email,
        display_name=account.display_name or account.team_name,
        password_hash=password_hash,
    )
    session.add(participant)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        raise Conflict("team name or e-mail already registered") from None
    return participant


def rename_team(session: Session, *, team: Team, name: str) -> Team:
    """A new name for a team that has not submitted yet (its name is then on no board); the name rules of
    registration apply (no hidden characters, not like another team's)."""
    try:
        cleaned = clean_name(name, field="team_name")
    except InvalidNameError as exc:
        raise InvalidInput(str(exc)) from None
    if session.scalar(select(func.count()).select_from(Submission).where(Submission.team_id == team.id)):
        raise Conflict("team_name: a team is renamed only before its first submission")
    clash = session.scalar(select(Team.name).where(Team.name_skeleton == skeleton(cleaned), Team.id != team.id))
    if clash is not None:
        raise Conflict(f"team_name: {cleaned!r} looks like the existing team {clash!r}; choose another")
    team.name = cleaned
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        raise Conflict("team_name: already taken") from None
    return team


INVITATION_TTL = timedelta(days=7)
INVITATION_PREFIX = "inv_"


INVITATIONS_PER_TEAM_PER_HOUR = 20


def invite(session: Session, *, team: Team, email: str, invited_by: Participant) -> tuple[TeamInvitation, str]:
    """An invitation for `email` to join `team`; returns the row and its token (shown once).

    The answer is the same whether `email` is registered or not (no e-mail oracle: a registered address
    finds out only when redeeming). One pending invitation per address and team (409 while one is pending:
    revoke it to send another); at most INVITATIONS_PER_TEAM_PER_HOUR per team (429)."""
    address = normalise_email(email)
    now = utcnow()
    pending = session.scalar(
        select(func.count())
        .select_from(TeamInvitation)
        .where(
            TeamInvitation.team_id == team.id,
            TeamInvitation.email == address,
            TeamInvitation.redeemed_at.is_(None),
            TeamInvitation.revoked_at.is_(None),
            TeamInvitation.expires_at > now,
        )
    )
    if pending:
        raise Conflict("this address has a pending invitation to your team; revoke it to send a new one")
    # An invitation's creation time is its expiry less INVITATION_TTL: the last hour's, counted in the database
    # (shared by every API process).
    recent = session.scalars(
        select(TeamInvitation.expires_at).where(
            TeamInvitation.team_id == team.id, TeamInvitation.expires_at > now + INVITATION_TTL - timedelta(hours=1)
        )
    ).all()
    if len(recent) >= INVITATIONS_PER_TEAM_PER_HOUR:
        wait = int((min(recent) - INVITATION_TTL + timedelta(hours=1) - now).total_seconds()) + 1
        raise TooManyRequests(
            f"your team sent {INVITATIONS_PER_TEAM_PER_HOUR} invitations in the last hour; try again in {wait} s",
            retry_after_s=wait,
        )
    token = INVITATION_PREFIX + secrets.token_urlsafe(24)
    row = TeamInvitation(
        team_id=team.id,
        email=address,
        token_hash=hash_token(token),
        invited_by_id=invited_by.id,
        expires_at=now + INVITATION_TTL,
    )
    session.add(row)
    session.flush()
    return row, token


def redeem_invitation(session: Session, *, token: str, account: NewAccount, password_hash: str) -> Participant:
    """The invitee's own account in the inviting team; 404 for an unknown, used, revoked or expired invitation,
    409 when the e-mail is not the one invited or is registered already."""
    row = session.scalars(
        select(TeamInvitation).where(TeamInvitation.token_hash == hash_token(token)).with_for_update()
    ).one_or_none()
    if row is None or row.redeemed_at is not None or row.revoked_at is not None or row.expires_at <= utcnow():
        raise NotFound("no such invitation, or it was used, revoked or has expired; ask your team for a new one")
    if row.email != account.email:
        raise Conflict("this invitation is for another e-mail address")
    _email_free(session, account.email)
    participant = Participant(
        team_id=row.team_id,
        email=account.email,
        display_name=account.display_name or account.email.split("@")[0],
        password_hash=password_hash,
    )
    session.add(participant)
    row.redeemed_at = utcnow()
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        raise Conflict("this e-mail is already registered") from None
    return participant


def find_login(session: Session, *, email: str) -> Participant | None:
    return session.scalars(select(Participant).where(Participant.email == email.strip().lower())).one_or_none()


def password_matches(participant: Participant | None, password: str) -> bool:
    """The slow check (argon2); takes as long for an unknown account as for a known one."""
    if participant is None:
        verify_password(_DUMMY_HASH, password)
        return False
    return verify_password(participant.password_hash, password) and participant.is_active


def login_token(session: Session, *, participant: Participant, ttl: timedelta) -> IssuedToken:
    return create_token(
        session, scope=TokenScope.PARTICIPANT, participant=participant, name="login", expires_at=utcnow() + ttl
    )
