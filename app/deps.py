"""Request dependencies as Annotated aliases: DbSession, AppSettings, CurrentPrincipal, CurrentParticipant,
OptionalPrincipal, AdminUser."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from app.auth.service import Principal, authenticate, require_organiser
from app.auth.throttle import Throttle
from app.errors import Forbidden
from app.settings import Settings
from app.tables import TokenScope

READ_ONLY_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def get_db(request: Request) -> Iterator[Session]:
    """One transaction per request: committed after the endpoint returns (before the response is sent),
    rolled back on any error. Tasks enqueued on the session are sent after the commit. Requests that may
    write get a writing session (app.db: on SQLite their transactions queue for the write lock)."""
    state = request.app.state
    factory = state.session_factory if request.method in READ_ONLY_METHODS else state.write_session_factory
    session: Session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


DbSession = Annotated[Session, Depends(get_db, scope="function")]
AppSettings = Annotated[Settings, Depends(get_app_settings)]

_bearer = HTTPBearer(auto_error=False, description="An API token: `Authorization: Bearer mdg_...`.")
BearerCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _authenticated(db: Session, token: str | None) -> Principal:
    principal = authenticate(db, token=token)
    if principal.token.scope is TokenScope.RUNNER:
        # A GPU host's token opens the job protocol (app.runner) and nothing else.
        raise Forbidden("a runner token is good for the job protocol under /api/v1/runner only")
    # End the lookup's transaction here, in the dependency's own thread call: on SQLite a writing request's
    # transaction holds the write lock, and holding it until the endpoint gets a thread of the (bounded)
    # pool would let requests that wait for the lock starve the one that holds it. The loaded rows stay
    # usable (sessions do not expire them on commit).
    db.commit()
    return principal


def get_principal(db: DbSession, credentials: BearerCredentials) -> Principal:
    return _authenticated(db, credentials.credentials if credentials else None)


def get_optional_principal(db: DbSession, credentials: BearerCredentials) -> Principal | None:
    """Anonymous when no token is sent; a token that is sent must be valid."""
    if credentials is None:
        return None
    return _authenticated(db, credentials.credentials)


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]
OptionalPrincipal = Annotated[Principal | None, Depends(get_optional_principal)]


def get_participant(principal: CurrentPrincipal) -> Principal:
    if principal.participant is None or principal.team is None:
        raise Forbidden("a participant token is required (organiser tokens belong to no team)")
    return principal


def get_admin(request: Request, principal: CurrentPrincipal) -> Principal:
    """Organiser tokens; only those of scope `organiser` may write, `organiser_read` ones read."""
    require_organiser(principal)
    if request.method not in READ_ONLY_METHODS and principal.token.scope is not TokenScope.ORGANISER:
        raise Forbidden("this organiser token may only read (scope organiser_read)")
    return principal


CurrentParticipant = Annotated[Principal, Depends(get_participant)]
AdminUser = Annotated[Principal, Depends(get_admin)]


def client_address(request: Request) -> str:
    """The client's address as the server sees it (behind a proxy: as uvicorn's --proxy-headers set it)."""
    return request.client.host if request.client is not None else "unknown"


def request_throttle(request: Request) -> Throttle:
    """The application's login and registration throttle (app.auth.throttle), one per process."""
    throttle: Throttle = request.app.state.throttle
    return throttle
