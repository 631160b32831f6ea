"""Team self-registration, login/logout, the current principal, adding team members (HTTP only)."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Response, status

from app.auth import service
from app.auth.schemas import (
    LoginRequest,
    MemberCreate,
    MeRead,
    ParticipantRead,
    RegisterResult,
    TeamRead,
    TeamRegister,
    TokenIssued,
)
from app.deps import AppSettings, CurrentParticipant, CurrentPrincipal, DbSession
from app.openapi import errors

router = APIRouter(prefix="/api/v1", tags=["auth"])


def token_issued(issued: service.IssuedToken) -> TokenIssued:
    return TokenIssued(token=issued.token, id=issued.row.id, scope=issued.row.scope, expires_at=issued.row.expires_at)


@router.post(
    "/auth/register",
    status_code=status.HTTP_201_CREATED,
    summary="Register a team with its first participant; returns a login token",
    responses=errors(409, 422, 503),
)
def register(db: DbSession, settings: AppSettings, body: TeamRegister) -> RegisterResult:
    participant = service.register_team(
        db,
        team_name=body.team_name,
        email=body.email,
        password=body.password,
        display_name=body.display_name or body.team_name,
    )
    issued = service.login(
        db, email=body.email, password=body.password, ttl=timedelta(hours=settings.login_token_ttl_hours)
    )
    return RegisterResult(
        team=TeamRead.model_validate(participant.team),
        participant=ParticipantRead.model_validate(participant),
        token=token_issued(issued),
    )


@router.post("/auth/login", summary="Exchange e-mail and password for a bearer token", responses=errors(401, 422, 503))
def login(db: DbSession, settings: AppSettings, body: LoginRequest) -> TokenIssued:
    ttl = timedelta(hours=settings.login_token_ttl_hours)
    return token_issued(service.login(db, email=body.email, password=body.password, ttl=ttl))


@router.post(
    "/auth/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Revoke the token used for this request",
    responses=errors(401, 503),
)
def logout(db: DbSession, principal: CurrentPrincipal) -> Response:
    service.revoke_token(db, token=principal.token)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/me", summary="Who the token belongs to", responses=errors(401, 503))
def me(principal: CurrentPrincipal) -> MeRead:
    return MeRead(
        scope=principal.token.scope,
        participant=ParticipantRead.model_validate(principal.participant) if principal.participant else None,
        team=TeamRead.model_validate(principal.team) if principal.team else None,
    )


@router.post(
    "/teams/me/members",
    status_code=status.HTTP_201_CREATED,
    summary="Add a participant to the caller's team (members share the team's quota)",
    responses=errors(401, 403, 409, 422, 503),
)
def add_member(db: DbSession, principal: CurrentParticipant, body: MemberCreate) -> ParticipantRead:
    assert principal.team is not None
    participant = service.add_member(
        db,
        team=principal.team,
        email=body.email,
        password=body.password,
        display_name=body.display_name or body.email.split("@")[0],
    )
    return ParticipantRead.model_validate(participant)
