"""Tokens issued by the organisers through the API: the lifetime rules and the token itself.

A token expires at the time asked for, or after the default lifetime of its scope (`organiser_token_ttl_days`
for organiser scopes, `runner_token_ttl_days` for runners, `login_token_ttl_hours` for participants); a time
in the past or beyond `token_max_lifetime_days` from now is refused. A participant token names its
participant; an organiser or runner token names none. Never commits: the caller's request does.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from app.auth.service import IssuedToken, create_token
from app.errors import InvalidInput, NotFound
from app.settings import Settings
from app.tables import Participant, TokenScope, utcnow


def default_lifetime(settings: Settings, scope: TokenScope) -> timedelta:
    """How long a token of `scope` lives when no expiry is asked for."""
    if scope.is_organiser:
        return timedelta(days=settings.organiser_token_ttl_days)
    if scope is TokenScope.RUNNER:
        return timedelta(days=settings.runner_token_ttl_days)
    return timedelta(hours=settings.login_token_ttl_hours)


def expiry(settings: Settings, scope: TokenScope, asked: datetime | None, *, now: datetime) -> datetime:
    """The expiry of a new token: the one asked for, checked against now and the maximum lifetime, or the
    scope's default. Raises InvalidInput naming expires_at."""
    if asked is None:
        return now + default_lifetime(settings, scope)
    if asked <= now:
        raise InvalidInput("expires_at: lies in the past; give a future time or leave it out")
    longest = now + timedelta(days=settings.token_max_lifetime_days)
    if asked > longest:
        raise InvalidInput(
            f"expires_at: later than the maximum token lifetime of {settings.token_max_lifetime_days} days "
            f"(at most {longest:%Y-%m-%d %H:%M} UTC)"
        )
    return asked


def issue_token(
    session: Session,
    settings: Settings,
    *,
    scope: TokenScope,
    participant_id: int | None,
    name: str,
    expires_at: datetime | None,
) -> IssuedToken:
    """A new token of `scope` (shown once), with its expiry rules and its participant checked."""
    expires = expiry(settings, scope, expires_at, now=utcnow())
    participant = None
    if scope is TokenScope.PARTICIPANT:
        if participant_id is None:
            raise InvalidInput("participant_id is required for a participant token")
        participant = session.get(Participant, participant_id)
        if participant is None:
            raise NotFound(f"no participant {participant_id}")
    elif participant_id is not None:
        raise InvalidInput("organiser tokens belong to no participant")
    return create_token(session, scope=scope, participant=participant, name=name, expires_at=expires)
