"""HTML routes: challenge list and overview, per-phase leaderboard, public submission detail; `install_pages`.

The leaderboard page reuses `app.leaderboard.service.get_leaderboard` (one SQL statement) with the anonymous
view, so a hidden phase renders no score here either. A submission page exists only for a submission that is
an entry of a visible leaderboard. Must not import the worker.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy import select

from app.challenges import service as challenges
from app.deps import DbSession
from app.errors import NotFound
from app.leaderboard import service as leaderboard
from app.pages.analysis_plots import analysis_context
from app.pages.session import remember_csrf
from app.pages.templates import PACKAGE_DIR, root_context, templates
from app.pages.views import board_columns, entry_views, group_chart
from app.tables import Phase, Result, Submission, utcnow
from app.types import IdPath, Slug

router = APIRouter(include_in_schema=False)


def _render(request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> HTMLResponse:
    response = templates.TemplateResponse(request, name, context, status_code=status_code)
    remember_csrf(request, response)  # the header's log-out form carries it
    return response


def _not_found(request: Request, detail: str) -> HTMLResponse:
    return _render(request, "not_found.html", {"detail": detail}, status_code=404)


@router.get("/", response_class=HTMLResponse)
def index(request: Request, db: DbSession) -> HTMLResponse:
    items = [challenges.challenge_read(c) for c in challenges.list_challenges(db)]
    return _render(request, "index.html", {"challenges": items})


@router.get("/challenges/{slug}", response_class=HTMLResponse)
def challenge_page(request: Request, db: DbSession, slug: Slug) -> HTMLResponse:
    try:
        challenge = challenges.challenge_read(challenges.get_challenge(db, slug=slug))
    except NotFound as exc:
        return _not_found(request, str(exc))
    now = utcnow()
    phases = [
        {
            "phase": p,
            "state": "open" if p.is_open else ("upcoming" if p.opens_at is not None and now < p.opens_at else "closed"),
        }
        for p in challenge.phases
    ]
    return _render(request, "challenge.html", {"challenge": challenge, "phases": phases})


@router.get("/phases/{phase_id}/leaderboard", response_class=HTMLResponse)
def leaderboard_page(request: Request, db: DbSession, phase_id: IdPath) -> HTMLResponse:
    try:
        board = leaderboard.get_leaderboard(db, phase_id=phase_id, as_organiser=False)
    except NotFound as exc:
        return _not_found(request, str(exc))
    views = entry_views(board)
    return _render(
        request,
        "leaderboard.html",
        {"board": board, "views": views, "columns": board_columns(board), "chart": group_chart(board, views)},
    )


@router.get("/phases/{phase_id}/analysis", response_class=HTMLResponse)
def analysis_page(request: Request, db: DbSession, phase_id: IdPath) -> HTMLResponse:
    try:
        data = json.loads(leaderboard.get_analysis_json(db, phase_id=phase_id, as_organiser=False))
    except NotFound as exc:
        return _not_found(request, str(exc))
    doc = data.pop("analysis")
    root = root_context(request)["root"]
    return _render(
        request, "analysis.html", {"head": data, **analysis_context(doc, csv_base=f"{root}/api/v1/phases/{phase_id}")}
    )


@router.get("/submissions/{submission_id}", response_class=HTMLResponse)
def submission_page(request: Request, db: DbSession, submission_id: IdPath) -> HTMLResponse:
    missing = f"submission {submission_id} is not on a public leaderboard"
    submission = db.get(Submission, submission_id)
    if submission is None:
        return _not_found(request, missing)
    try:
        board = leaderboard.get_leaderboard(db, phase_id=submission.phase_id, as_organiser=False)
    except NotFound:
        return _not_found(request, missing)
    views = [v for v in entry_views(board) if v.entry.submission_id == submission_id]
    if not views:
        return _not_found(request, missing)
    representation = db.scalar(
        select(Result.representation)
        .join(Phase, Phase.id == submission.phase_id)
        .where(Result.submission_id == submission_id, Result.evaluation_version == Phase.evaluation_version)
    )
    return _render(
        request,
        "submission.html",
        {"board": board, "view": views[0], "description": submission.description, "representation": representation},
    )


def install_pages(app: FastAPI) -> None:
    """Mount the static files and add the HTML routes to `app`."""
    app.mount("/static", StaticFiles(directory=PACKAGE_DIR / "static"), name="static")
    from app.pages.account import router as account_router
    from app.pages.organiser import router as organiser_router

    app.include_router(router)
    app.include_router(account_router)
    app.include_router(organiser_router)
