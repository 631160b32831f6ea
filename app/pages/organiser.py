"""The organisers' dashboard: submissions across teams with their status, failure lines and provenance, the
queue and each worker's health (GPU hosts with their classes, GPUs, cache and last heartbeat, stale ones
marked), compute spent per phase and team against each phase's GPU budget with what is queued, and re-run /
disqualify actions that ask for confirmation first (a page of
its own, so no JavaScript is needed). Organisers sign in with an organiser token (the same session cookie
and CSRF rules as the participants' pages, app.pages.session); every action is recorded in the audit log as
the organiser API's writes are, and goes through the same service functions.
"""

from __future__ import annotations

from collections import Counter
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select

from app.admin import service as admin
from app.admin.audit import record_admin_writes
from app.admin.compute import compute_report
from app.auth.service import Principal, authenticate
from app.deps import AppSettings, DbSession
from app.errors import AppError
from app.pages.account import csrf_refusal, render_page
from app.pages.session import start_session, viewer
from app.tables import Phase, TestSet, TokenScope, utcnow
from app.types import IdPath
from app.worker_hosts import service as workers

router = APIRouter(include_in_schema=False, prefix="/organiser")
ACTIONS = {
    "requeue": ("Re-run", "Queue this submission's evaluation again. Its current result stays on the board until "
                          "the new run's result replaces it; a run that fails leaves it in place."),
    "disqualify": ("Disqualify", "Take this submission off the leaderboard for good (its result is kept)."),
    "requalify": ("Requalify", "Put this disqualified submission back on the leaderboard."),
}  # fmt: skip


def _organiser(request: Request, db: Any, *, write: bool = False) -> Principal | None:
    principal = viewer(request, db)
    if principal is None or not principal.is_organiser:
        return None
    if write and principal.token.scope is not TokenScope.ORGANISER:
        return None
    return principal


def _to_login(request: Request) -> RedirectResponse:
    return RedirectResponse("/organiser/login", status_code=303)


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request) -> HTMLResponse:
    return render_page(request, "organiser/login.html", {"errors": {}})


@router.post("/login", response_class=HTMLResponse)
def login_submit(
    request: Request,
    db: DbSession,
    settings: AppSettings,
    token: Annotated[str, Form(max_length=200)],
    csrf: str = Form(""),
) -> Response:
    if (refusal := csrf_refusal(request, csrf)) is not None:
        return refusal
    try:
        principal = authenticate(db, token=token.strip())
    except AppError:
        principal = None
    if principal is None or not principal.is_organiser:
        return render_page(request, "organiser/login.html", {"errors": {"token": "not a valid organiser token"}}, 401)
    expires = principal.token.expires_at
    lifetime = int(settings.login_token_ttl_hours * 3600)
    if expires is not None:
        lifetime = max(60, min(lifetime, int((expires - utcnow()).total_seconds())))
    return start_session(request, RedirectResponse("/organiser", status_code=303), token.strip(), lifetime)


@router.get("", response_class=HTMLResponse)
def dashboard(request: Request, db: DbSession, settings: AppSettings) -> Response:
    principal = _organiser(request, db)
    if principal is None:
        return _to_login(request)
    rows = admin.list_submissions(db, phase_id=None, team_id=None, limit=100, offset=0)
    views = [admin.admin_view(s) for s in rows]
    queue = Counter(v.evaluation.status.value for v in views if v.evaluation is not None)
    nodes = [workers.admin_view(row, stale_after_s=settings.worker_stale_after_s) for row in workers.worker_rows(db)]
    context = {
        "compute": compute_report(db),
        "views": views,
        "test_sets": list(db.scalars(select(TestSet).order_by(TestSet.id))),
        "phases": list(db.scalars(select(Phase).order_by(Phase.challenge_id, Phase.id))),
        "queue": dict(sorted(queue.items())),
        "workers": nodes,
        "can_write": principal.token.scope is TokenScope.ORGANISER,
        "actions": ACTIONS,
    }
    return render_page(request, "organiser/dashboard.html", context)


@router.get("/test-sets/{test_set_id}/domain-report", response_class=HTMLResponse)
def domain_report(request: Request, db: DbSession, test_set_id: IdPath) -> Response:
    """The test set's domain report (app.admin.service.domain_report_page), for a signed-in organiser."""
    if _organiser(request, db) is None:
        return _to_login(request)
    try:
        page = admin.domain_report_page(db, test_set_id=test_set_id)
        return Response(
            page.html, media_type="text/html; charset=utf-8", headers={"Content-Security-Policy": page.policy}
        )
    except AppError as exc:
        return render_page(request, "not_found.html", {"detail": exc.message}, exc.status_code)


@router.get("/submissions/{submission_id}/logs", response_class=HTMLResponse)
def submission_logs(
    request: Request,
    db: DbSession,
    settings: AppSettings,
    submission_id: IdPath,
    case: Annotated[str | None, Query(min_length=1, max_length=255)] = None,
) -> Response:
    """A submission's run logs for a signed-in organiser, whatever the phase shows participants."""
    from app.submissions.logs import read_logs

    if _organiser(request, db) is None:
        return _to_login(request)
    try:
        submission = admin.get_submission(db, submission_id=submission_id)
        got = read_logs(submission, storage_dir=settings.storage_path, case=case)
    except AppError as exc:
        return render_page(request, "not_found.html", {"detail": exc.message, "title": "No logs"}, exc.status_code)
    view = admin.admin_view(submission)
    context = {"logs": got, "failure": view.evaluation.error_message if view.evaluation else "",
               "back": f"/organiser#submission-{submission_id}", "back_label": "dashboard"}  # fmt: skip
    return render_page(request, "logs.html", context)


def _possible(view: Any, action: str) -> bool:
    if action == "requeue":
        return view.evaluation is None or not view.evaluation.status.is_active
    return bool(view.is_disqualified) == (action == "requalify")


@router.get("/submissions/{submission_id}/{action}", response_class=HTMLResponse)
def confirm_page(request: Request, db: DbSession, submission_id: IdPath, action: str) -> Response:
    principal = _organiser(request, db, write=True)
    if principal is None:
        return _to_login(request)
    if action not in ACTIONS:
        return render_page(request, "not_found.html", {"detail": f"no action {action!r}"}, 404)
    try:
        view = admin.admin_view(admin.get_submission(db, submission_id=submission_id))
    except AppError as exc:
        return render_page(request, "not_found.html", {"detail": exc.message}, exc.status_code)
    context = {"view": view, "action": action, "label": ACTIONS[action][0], "explanation": ACTIONS[action][1],
               "possible": _possible(view, action)}  # fmt: skip
    return render_page(request, "organiser/confirm.html", context)


@router.post("/submissions/{submission_id}/{action}", response_class=HTMLResponse)
def do_action(request: Request, db: DbSession, submission_id: IdPath, action: str, csrf: str = Form("")) -> Response:
    if (refusal := csrf_refusal(request, csrf)) is not None:
        return refusal
    principal = _organiser(request, db, write=True)
    if principal is None:
        return _to_login(request)
    if action not in ACTIONS:
        return render_page(request, "not_found.html", {"detail": f"no action {action!r}"}, 404)
    request.state.audit = {"action": action, "via": "dashboard"}
    audit = record_admin_writes(request, db, principal)
    next(audit)
    try:
        submission = admin.get_submission(db, submission_id=submission_id)
        if action == "requeue":
            admin.requeue_submission(db, submission=submission, discard_result=False)
        else:
            admin.moderate_submission(
                db, submission=submission, is_hidden=None, is_disqualified=action == "disqualify", is_baseline=None
            )
    except AppError as exc:
        return render_page(request, "not_found.html", {"detail": exc.message, "title": "Not done"}, exc.status_code)
    next(audit, None)  # the action succeeded: its audit event joins the transaction
    return RedirectResponse(f"/organiser#submission-{submission_id}", status_code=303)
