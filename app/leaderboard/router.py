"""Public leaderboard of a phase, JSON and CSV (one SQL statement per anonymous request)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from app.deps import DbSession, OptionalPrincipal
from app.leaderboard import service
from app.leaderboard.schemas import LeaderboardRead
from app.openapi import errors
from app.types import IdPath

router = APIRouter(prefix="/api/v1", tags=["leaderboard"])


@router.get(
    "/phases/{phase_id}/leaderboard",
    summary="Leaderboard: one row per team (best or latest per the phase's policy), ties share a rank",
    description="Scores are omitted (`scores_visible` false) while the phase hides them, except for organisers.",
    response_class=Response,
    responses={
        200: {"model": LeaderboardRead, "description": "The leaderboard", "content": {"application/json": {}}},
        **errors(401, 404, 422, 503),
    },
)
def get_leaderboard(db: DbSession, principal: OptionalPrincipal, phase_id: IdPath) -> Response:
    as_organiser = principal is not None and principal.is_organiser
    body = service.get_leaderboard_json(db, phase_id=phase_id, as_organiser=as_organiser)
    return Response(body, media_type="application/json")


@router.get(
    "/phases/{phase_id}/leaderboard.csv",
    summary="Leaderboard as CSV (formula-injection safe)",
    response_class=Response,
    responses={
        200: {"description": "CSV", "content": {"text/csv": {"schema": {"type": "string"}}}},
        **errors(401, 404, 422, 503),
    },
)
def get_leaderboard_csv(db: DbSession, principal: OptionalPrincipal, phase_id: IdPath) -> Response:
    as_organiser = principal is not None and principal.is_organiser
    board = service.get_leaderboard(db, phase_id=phase_id, as_organiser=as_organiser)
    return Response(
        service.leaderboard_csv(board),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="leaderboard-phase-{phase_id}.csv"'},
    )
