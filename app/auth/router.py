"""Team self-registration, login/logout, the current principal, invitations to join a team (HTTP only).

Login and registration are throttled before any database work (app.auth.throttle), and the slow password
hash never runs inside a database transaction: on SQLite a writing transaction holds the write lock.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status

from app.auth import accounts, service
from app.auth.schemas import (
    InvitationCreate,
    InvitationIssued,
    InvitationRead,
    JoinRequest,
    LoginRequest,
    MeRead,
    ParticipantRead,
    RegisterResult,
    TeamDetail,
    TeamRead,
    TeamRegister,
    TeamRename,
    TokenIssued,
)
from app.deps import AppSettings, CurrentParticipant, CurrentPrincipal, DbSession, client_address, request_throttle
from app.openapi import errors
from app.tables import Participant
from app.types import IdPath

router = APIRouter(prefix="/api/v1", tags=["auth"])


def _account_result(participant: Participant, issued: service.IssuedToken) -> RegisterResult:
    return RegisterResult(
        team=TeamRead.model_validate(participant.team),
        participant=ParticipantRead.model_validate(participant),
        token=TokenIssued.of(issued),
    )


@router.post(
    "/auth/register",
    status_code=status.HTTP_201_CREATED,
    summary="Register a team with its first participant; returns a login token",
    description=(
        "Passwords: at least 10 characters, not a common password, not containing the e-mail address. Team "
        "names may not hide characters (control, invisible or direction characters) nor look like an existing "
        "team's name (Unicode confusables). Registrations are throttled per client address (429)."
    ),
    responses=errors(409, 422, 429, 503),
)
def register(request: Request, db: DbSession, settings: AppSettings, body: TeamRegister) -> RegisterResult:
    participant, issued = accounts.register(
        db,
        settings,
        request_throttle(request),
        address=client_address(request),
        email=body.email,
        password=body.password,
        display_name=body.display_name or "",
        team_name=body.team_name,
    )
    return _account_result(participant, issued)


@router.post(
    "/auth/login",
    summary="Exchange e-mail and password for a bearer token",
    description=(
        "Throttled per client address, and after failed attempts per (account, client address) (429 with "
        "Retry-After); failures for an account from many addresses slow its logins down, never lock them."
    ),
    responses=errors(401, 422, 429, 503),
)
def login(request: Request, db: DbSession, settings: AppSettings, body: LoginRequest) -> TokenIssued:
    address = client_address(request)
    issued = accounts.login(
        db, settings, request_throttle(request), address=address, email=body.email, password=body.password
    )
    return TokenIssued.of(issued)


@router.post(
    "/auth/join",
    status_code=status.HTTP_201_CREATED,
    summary="Join a team with an invitation: your own account, with your own password",
    responses=errors(404, 409, 422, 429, 503),
)
def join(request: Request, db: DbSession, settings: AppSettings, body: JoinRequest) -> RegisterResult:
    participant, issued = accounts.join(
        db,
        settings,
        request_throttle(request),
        address=client_address(request),
        invitation=body.invitation,
        email=body.email,
        password=body.password,
        display_name=body.display_name or "",
    )
    return _account_result(participant, issued)


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


@router.get("/teams/me", summary="The caller's team: members and invitations", responses=errors(401, 403, 503))
def my_team(db: DbSession, principal: CurrentParticipant) -> TeamDetail:
    assert principal.team is not None
    team_id = principal.team.id
    members = service.team_members(db, team_id=team_id)
    invitations = service.team_invitations(db, team_id=team_id)
    return TeamDetail(
        team=TeamRead.model_validate(principal.team),
        members=[ParticipantRead.model_validate(m) for m in members],
        invitations=[InvitationRead.model_validate(i) for i in invitations],
    )


@router.patch(
    "/teams/me",
    summary="Rename the caller's team (only before its first submission)",
    responses=errors(401, 403, 409, 422, 503),
)
def rename_team(db: DbSession, principal: CurrentParticipant, body: TeamRename) -> TeamRead:
    assert principal.team is not None
    return TeamRead.model_validate(service.rename_team(db, team=principal.team, name=body.name))


@router.post(
    "/teams/me/invitations",
    status_code=status.HTTP_201_CREATED,
    summary="Invite someone to the caller's team (they redeem it at /auth/join; members share the quota)",
    responses=errors(401, 403, 409, 422, 429, 503),
)
def create_invitation(db: DbSession, principal: CurrentParticipant, body: InvitationCreate) -> InvitationIssued:
    assert principal.team is not None
    assert principal.participant is not None
    row, token = service.invite(db, team=principal.team, email=body.email, invited_by=principal.participant)
    return InvitationIssued(**InvitationRead.model_validate(row).model_dump(), token=token)


@router.get("/teams/me/invitations", summary="The caller's team's invitations", responses=errors(401, 403, 503))
def list_invitations(db: DbSession, principal: CurrentParticipant) -> list[InvitationRead]:
    assert principal.team is not None
    rows = service.team_invitations(db, team_id=principal.team.id)
    return [InvitationRead.model_validate(row) for row in rows]


@router.delete(
    "/teams/me/invitations/{invitation_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Revoke an invitation of the caller's team",
    responses=errors(401, 403, 404, 422, 503),
)
def revoke_invitation(db: DbSession, principal: CurrentParticipant, invitation_id: IdPath) -> Response:
    assert principal.team is not None
    service.revoke_invitation(db, team_id=principal.team.id, invitation_id=invitation_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
