"""The account steps that need the throttle: registration, login and joining a team by invitation. The JSON
API (app.auth.router) and the account pages (app.pages.account) both call these, so the throttles, the
password and name checks and the token lifetime hold in both.

The slow password hash never runs inside a database transaction (on SQLite a writing transaction holds the
write lock): login ends its read before checking the password. Never commits: the caller's request does.
"""

from __future__ import annotations

import time
from datetime import timedelta

from sqlalchemy.orm import Session

from app.auth import service
from app.auth.throttle import Throttle
from app.errors import NotAuthenticated
from app.settings import Settings
from app.tables import Participant


def register(
    db: Session,
    settings: Settings,
    throttle: Throttle,
    *,
    address: str,
    email: str,
    password: str,
    display_name: str,
    team_name: str,
) -> tuple[Participant, service.IssuedToken]:
    """A new team with its first participant, and a login token (throttled per client address)."""
    throttle.registration(address=address)
    account = service.check_new_account(email=email, password=password, display_name=display_name, team_name=team_name)
    password_hash = throttle.hashed(lambda: service.hash_password(password))
    participant = service.register_team(db, account=account, password_hash=password_hash)
    issued = service.login_token(db, participant=participant, ttl=timedelta(hours=settings.login_token_ttl_hours))
    return participant, issued


def login(
    db: Session, settings: Settings, throttle: Throttle, *, address: str, email: str, password: str
) -> service.IssuedToken:
    """A login token for e-mail and password; throttled per address and per (account, address), slowed down
    (never locked) when an account is guessed from many addresses. Raises NotAuthenticated."""
    email = email.strip().lower()
    slowdown = throttle.login_attempt(address=address, email=email)
    participant = service.find_login(db, email=email)
    db.commit()  # the read ends here: the password check below must not hold a transaction open
    if slowdown:
        time.sleep(slowdown)  # the account is being guessed from many addresses: slower, never locked
    if not throttle.hashed(lambda: service.password_matches(participant, password)) or participant is None:
        throttle.login_failed(email=email, address=address)
        raise NotAuthenticated("wrong e-mail or password")
    return service.login_token(db, participant=participant, ttl=timedelta(hours=settings.login_token_ttl_hours))


def join(
    db: Session,
    settings: Settings,
    throttle: Throttle,
    *,
    address: str,
    invitation: str,
    email: str,
    password: str,
    display_name: str,
) -> tuple[Participant, service.IssuedToken]:
    """An own account in the team of an invitation, and a login token (throttled like registration)."""
    throttle.registration(address=address)
    account = service.check_new_account(email=email, password=password, display_name=display_name)
    password_hash = throttle.hashed(lambda: service.hash_password(password))
    participant = service.redeem_invitation(db, token=invitation, account=account, password_hash=password_hash)
    issued = service.login_token(db, participant=participant, ttl=timedelta(hours=settings.login_token_ttl_hours))
    db.refresh(participant, ["team"])
    return participant, issued
