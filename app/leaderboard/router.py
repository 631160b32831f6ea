"""Public leaderboard of a phase and its ranking analysis, JSON and CSV (one SQL statement per anonymous
request)."""

from __future__ import annotations

import enum
import json

from fastapi import APIRouter, Response

from app.deps import DbSession, OptionalPrincipal
from app.leaderboard import service
from app.leaderboard.analysis_tables import TABLES
from app.leaderboard.schemas import LeaderboardRead
from app.openapi import errors
from app.types import IdPath

router = APIRouter(prefix="/api/v1", tags=["leaderboard"])

AnalysisTable = enum.StrEnum("AnalysisTable", {name.replace("-", "_"): name for name in TABLES})  # type: ignore[misc]


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


@router.get(
    "/phases/{phase_id}/analysis",
    summary="Ranking analysis: bootstrap ranks, pairwise significance, rank aggregation, F1 per entry and group",
    description=(
        "Built with the board (same entries, cases resampled within their group, seeded). `analysis.available` "
        "is false, with a reason, while the phase hides its scores or has no evaluated entry."
    ),
    response_class=Response,
    responses={200: {"description": "The analysis", "content": {"application/json": {}}}, **errors(401, 404, 422, 503)},
)
def get_analysis(db: DbSession, principal: OptionalPrincipal, phase_id: IdPath) -> Response:
    as_organiser = principal is not None and principal.is_organiser
    return Response(
        service.get_analysis_json(db, phase_id=phase_id, as_organiser=as_organiser), media_type="application/json"
    )


@router.get(
    "/phases/{phase_id}/analysis/{table}.csv",
    summary="The numbers of one analysis plot as CSV: ranks, significance, rank-aggregation, heatmap, generalisation",
    response_class=Response,
    responses={
        200: {"description": "CSV", "content": {"text/csv": {"schema": {"type": "string"}}}},
        **errors(401, 404, 422, 503),
    },
)
def get_analysis_csv(db: DbSession, principal: OptionalPrincipal, phase_id: IdPath, table: AnalysisTable) -> Response:
    as_organiser = principal is not None and principal.is_organiser
    doc = json.loads(service.get_analysis_json(db, phase_id=phase_id, as_organiser=as_organiser))["analysis"]
    header, rows = TABLES[table.value](doc) if doc.get("available") else ([], [])
    return Response(
        service.to_csv(header, rows),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="analysis-{table.value}-phase-{phase_id}.csv"'},
    )
