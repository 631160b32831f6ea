"""HTML pages for participants' accounts: register, log in and out, the team page (members, invitations), joining
by invitation, the submit page of a phase and the team's submissions. Every form works without JavaScript;
sessions and CSRF by app.pages.session. The account rules are those of the JSON API: these handlers call the
same endpoint functions (throttles, password and name checks, quotas, upload checks), so a rule holds in both.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy import func, select

from app.auth import accounts
from app.auth import service as auth
from app.auth.schemas import (
    InvitationCreate,
    InvitationIssued,
    InvitationRead,
    JoinRequest,
    LoginRequest,
    TeamRegister,
    TeamRename,
)
from app.challenges.service import get_phase, phase_read
from app.deps import AppSettings, DbSession, client_address, request_throttle
from app.errors import AppError, NotFound
from app.pages.session import check_csrf, end_session, remember_csrf, start_session, viewer
from app.pages.templates import templates
from app.submissions import intake
from app.submissions import logs as run_logs
from app.submissions import service as submissions
from app.submissions.budget import budget_refusal
from app.tables import Submission, SubmissionKind
from app.types import IdPath

router = APIRouter(include_in_schema=False)
TextField = Annotated[str, Form(max_length=20_000)]


def render_page(request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> HTMLResponse:
    response = templates.TemplateResponse(request, name, context, status_code=status_code)
    remember_csrf(request, response)
    return response


FRIENDLY = {
    "email": "enter an e-mail address such as name@example.org",
    "invitation": "paste the whole invitation you were given (letters, digits, - and _)",
}


def _first_error(exc: ValidationError) -> tuple[str, str]:
    """(field, message) of a form's first validation error, in words for the fields whose rule is a pattern."""
    first = exc.errors()[0]
    field = str(first["loc"][0]) if first["loc"] else "form"
    if first["type"] == "string_pattern_mismatch" and field in FRIENDLY:
        return field, FRIENDLY[field]
    return field, str(first["msg"]).removeprefix("Value error, ")


def csrf_refusal(request: Request, csrf: str | None) -> Response | None:
    """An HTML 403 page when the form's CSRF value or origin is wrong; None when it may go on."""
    try:
        check_csrf(request, csrf)
    except AppError as exc:
        return render_page(request, "not_found.html", {"detail": exc.message, "title": "Refused"}, exc.status_code)
    return None


def _field_of(message: str, fields: tuple[str, ...]) -> str:
    """The form field an API error names ("password: ..." -> password), else "form"."""
    head = message.split(":", 1)[0].strip()
    return head if head in fields else "form"


def _to_login(request: Request) -> RedirectResponse:
    return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)


def _signed_in(request: Request, settings: Any, token: str, to: str) -> Response:
    response = RedirectResponse(to, status_code=303)
    return start_session(request, response, token, int(settings.login_token_ttl_hours * 3600))


def _safe_next(target: str | None) -> str:
    """Only a path of this site (never //host or a scheme) may follow a login."""
    return target if target and target.startswith("/") and not target.startswith("//") else "/team"


# --- register, log in, log out ------------------------------------------------------------------------------


@router.get("/register", response_class=HTMLResponse)
def register_page(request: Request) -> HTMLResponse:
    return render_page(request, "account/register.html", {"values": {}, "errors": {}})


@router.post("/register", response_class=HTMLResponse)
def register_submit(
    request: Request,
    db: DbSession,
    settings: AppSettings,
    team_name: TextField,
    email: TextField,
    password: TextField,
    csrf: TextField = "",
) -> Response:
    if (refusal := csrf_refusal(request, csrf)) is not None:
        return refusal
    values = {"team_name": team_name, "email": email}
    fields = ("team_name", "email", "password")
    try:
        body = TeamRegister(team_name=team_name, email=email, password=password)
        _participant_row, issued = accounts.register(
            db,
            settings,
            request_throttle(request),
            address=client_address(request),
            email=body.email,
            password=body.password,
            display_name=body.display_name or "",
            team_name=body.team_name,
        )
    except ValidationError as exc:
        field, message = _first_error(exc)
        return render_page(request, "account/register.html", {"values": values, "errors": {field: message}}, 422)
    except AppError as exc:
        errors = {_field_of(exc.message, fields): exc.message}
        return render_page(request, "account/register.html", {"values": values, "errors": errors}, exc.status_code)
    return _signed_in(request, settings, issued.token, "/team")


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str | None = None) -> HTMLResponse:
    return render_page(request, "account/login.html", {"values": {}, "errors": {}, "next": _safe_next(next)})


@router.post("/login", response_class=HTMLResponse)
def login_submit(
    request: Request,
    db: DbSession,
    settings: AppSettings,
    email: TextField,
    password: TextField,
    csrf: TextField = "",
    next: TextField = "/team",
) -> Response:
    if (refusal := csrf_refusal(request, csrf)) is not None:
        return refusal
    context: dict[str, Any] = {"values": {"email": email}, "errors": {}, "next": _safe_next(next)}
    try:
        body = LoginRequest(email=email, password=password)
        issued = accounts.login(
            db,
            settings,
            request_throttle(request),
            address=client_address(request),
            email=body.email,
            password=body.password,
        )
    except ValidationError:
        context["errors"] = {"form": "wrong e-mail or password"}
        return render_page(request, "account/login.html", context, 401)
    except AppError as exc:
        context["errors"] = {"form": exc.message}
        return render_page(request, "account/login.html", context, exc.status_code)
    return _signed_in(request, settings, issued.token, _safe_next(next))


@router.post("/logout")
def logout_submit(request: Request, db: DbSession, csrf: TextField = "") -> Response:
    if (refusal := csrf_refusal(request, csrf)) is not None:
        return refusal
    principal = viewer(request, db)
    if principal is not None and principal.participant is not None:  # a login token; organiser tokens live on
        auth.revoke_token(db, token=principal.token)
    return end_session(request, RedirectResponse("/", status_code=303))


# --- the team ------------------------------------------------------------------------------------------------


def _team_context(db: Any, principal: auth.Principal) -> dict[str, Any]:
    assert principal.team is not None
    team_id = principal.team.id
    return {
        "team": principal.team,
        "me": principal.participant,
        "members": auth.team_members(db, team_id=team_id),
        "invitations": auth.team_invitations(db, team_id=team_id),
        "errors": {},
        "issued": None,
        "can_rename": not db.scalar(select(func.count()).select_from(Submission).where(Submission.team_id == team_id)),
    }


def _participant(request: Request, db: Any) -> auth.Principal | None:
    principal = viewer(request, db)
    return principal if principal is not None and principal.team is not None else None


@router.get("/team", response_class=HTMLResponse)
def team_page(request: Request, db: DbSession) -> Response:
    principal = _participant(request, db)
    if principal is None:
        return _to_login(request)
    return render_page(request, "account/team.html", _team_context(db, principal))


@router.post("/team/invitations", response_class=HTMLResponse)
def team_invite(request: Request, db: DbSession, email: TextField, csrf: TextField = "") -> Response:
    if (refusal := csrf_refusal(request, csrf)) is not None:
        return refusal
    principal = _participant(request, db)
    if principal is None:
        return _to_login(request)
    try:
        assert principal.team is not None
        assert principal.participant is not None
        row, token = auth.invite(
            db, team=principal.team, email=InvitationCreate(email=email).email, invited_by=principal.participant
        )
        issued = InvitationIssued(**InvitationRead.model_validate(row).model_dump(), token=token)
    except (ValidationError, AppError) as exc:
        message = _first_error(exc)[1] if isinstance(exc, ValidationError) else exc.message
        context = {**_team_context(db, principal), "errors": {"email": message}, "invite_email": email}
        return render_page(request, "account/team.html", context, 422)
    context = {**_team_context(db, principal), "issued": issued}
    return render_page(request, "account/team.html", context, 201)


@router.post("/team/name", response_class=HTMLResponse)
def team_rename(request: Request, db: DbSession, name: TextField, csrf: TextField = "") -> Response:
    if (refusal := csrf_refusal(request, csrf)) is not None:
        return refusal
    principal = _participant(request, db)
    if principal is None:
        return _to_login(request)
    try:
        assert principal.team is not None
        auth.rename_team(db, team=principal.team, name=TeamRename(name=name).name)
    except (ValidationError, AppError) as exc:
        message = _first_error(exc)[1] if isinstance(exc, ValidationError) else exc.message
        context = {**_team_context(db, principal), "errors": {"name": message.removeprefix("team_name: ")}}
        return render_page(request, "account/team.html", context, 422 if isinstance(exc, ValidationError) else 409)
    return RedirectResponse("/team", status_code=303)


@router.get("/join", response_class=HTMLResponse)
def join_page(request: Request, invitation: str = "") -> HTMLResponse:
    return render_page(request, "account/join.html", {"values": {"invitation": invitation}, "errors": {}})


@router.post("/join", response_class=HTMLResponse)
def join_submit(
    request: Request,
    db: DbSession,
    settings: AppSettings,
    invitation: TextField,
    email: TextField,
    password: TextField,
    csrf: TextField = "",
) -> Response:
    if (refusal := csrf_refusal(request, csrf)) is not None:
        return refusal
    values = {"invitation": invitation, "email": email}
    try:
        body = JoinRequest(invitation=invitation, email=email, password=password)
        _participant_row, issued = accounts.join(
            db,
            settings,
            request_throttle(request),
            address=client_address(request),
            invitation=body.invitation,
            email=body.email,
            password=body.password,
            display_name=body.display_name or "",
        )
    except ValidationError as exc:
        field, message = _first_error(exc)
        return render_page(request, "account/join.html", {"values": values, "errors": {field: message}}, 422)
    except AppError as exc:
        errors = {_field_of(exc.message, ("invitation", "email", "password")): exc.message}
        return render_page(request, "account/join.html", {"values": values, "errors": errors}, exc.status_code)
    return _signed_in(request, settings, issued.token, "/team")


# --- submitting ----------------------------------------------------------------------------------------------


def _submit_context(db: Any, principal: auth.Principal, phase_id: int) -> dict[str, Any]:
    assert principal.team is not None
    phase = get_phase(db, phase_id=phase_id)
    return {
        "phase": phase_read(phase),
        "challenge_slug": phase.challenge.slug,
        "task": phase.test_set.task if phase.test_set is not None else "detection",
        "quota": submissions.quota_status(db, phase=phase, team=principal.team),
        # the line that refuses model and container uploads once a GPU budget of the phase is spent
        "budget_refusal": budget_refusal(db, phase=phase, team_id=principal.team.id),
        # the team's container submissions, whose image a new model tarball may run with
        "earlier_images": list(
            db.scalars(
                select(Submission)
                .where(Submission.team_id == principal.team.id, Submission.kind == SubmissionKind.CONTAINER)
                .order_by(Submission.id.desc())
                .limit(50)
            )
        ),
        "errors": {},
        "values": {},
    }


@router.get("/phases/{phase_id}/submit", response_class=HTMLResponse)
def submit_page(request: Request, db: DbSession, phase_id: IdPath) -> Response:
    principal = _participant(request, db)
    if principal is None:
        return _to_login(request)
    try:
        context = _submit_context(db, principal, phase_id)
    except NotFound as exc:
        return render_page(request, "not_found.html", {"detail": str(exc)}, 404)
    return render_page(request, "account/submit.html", context)


@router.post("/phases/{phase_id}/submit", response_class=HTMLResponse)
async def submit_upload(
    request: Request,
    db: DbSession,
    settings: AppSettings,
    phase_id: IdPath,
    kind: Annotated[SubmissionKind, Query()] = SubmissionKind.PREDICTIONS,
    csrf: Annotated[str, Query(max_length=200)] = "",
) -> Response:
    """The multipart upload of the submit page, streamed and checked exactly as the API's; the CSRF value comes
    in the query string so that it is checked before a byte of the body is read."""
    from starlette.concurrency import run_in_threadpool

    if (refusal := csrf_refusal(request, csrf)) is not None:
        return refusal
    principal = await run_in_threadpool(_participant, request, db)
    if principal is None:
        return _to_login(request)
    try:
        created = await intake.receive_submission(request, db, settings, principal, phase_id, kind)
    except AppError as exc:
        context = await run_in_threadpool(_submit_context, db, principal, phase_id)
        context["errors"] = {kind.value: exc.message}
        return render_page(request, "account/submit.html", context, exc.status_code)
    return RedirectResponse(f"/my/submissions#submission-{created.id}", status_code=303)


@router.post("/my/submissions/{submission_id}/cancel", response_class=HTMLResponse)
def cancel_submission(request: Request, db: DbSession, submission_id: IdPath, csrf: TextField = "") -> Response:
    if (refusal := csrf_refusal(request, csrf)) is not None:
        return refusal
    principal = _participant(request, db)
    if principal is None:
        return _to_login(request)
    try:
        assert principal.team is not None
        submissions.cancel_team_submission(db, submission_id=submission_id, team_id=principal.team.id)
    except AppError as exc:
        return render_page(
            request, "not_found.html", {"detail": exc.message, "title": "Not cancelled"}, exc.status_code
        )
    return RedirectResponse(f"/my/submissions#submission-{submission_id}", status_code=303)


@router.get("/my/submissions/{submission_id}/logs", response_class=HTMLResponse)
def my_submission_logs(
    request: Request,
    db: DbSession,
    settings: AppSettings,
    submission_id: IdPath,
    case: Annotated[str | None, Query(min_length=1, max_length=255)] = None,
) -> Response:
    """The run logs of one of the team's submissions, where its phase shows them (the API's rules)."""
    principal = _participant(request, db)
    if principal is None:
        return _to_login(request)
    try:
        assert principal.team is not None
        team_id = principal.team.id
        got = run_logs.read_team_logs(
            db, submission_id=submission_id, team_id=team_id, storage_dir=settings.storage_path, case=case
        )
        view = submissions.team_submission_view(db, submission_id=submission_id, team_id=team_id)
    except AppError as exc:
        return render_page(request, "not_found.html", {"detail": exc.message, "title": "No logs"}, exc.status_code)
    failure = view.evaluation.error_message if view.evaluation else ""
    context = {"logs": got, "failure": failure, "back": f"/my/submissions#submission-{submission_id}",
               "back_label": "your submissions"}  # fmt: skip
    return render_page(request, "logs.html", context)


@router.get("/my/submissions", response_class=HTMLResponse)
def my_submissions(request: Request, db: DbSession) -> Response:
    principal = _participant(request, db)
    if principal is None:
        return _to_login(request)
    assert principal.team is not None
    rows = submissions.list_team_submissions(db, team_id=principal.team.id, phase_id=None, limit=100, offset=0)
    views = [submissions.participant_view(s) for s in rows]
    running = any(v.evaluation is not None and v.evaluation.status.is_active for v in views)
    return render_page(
        request, "account/submissions.html", {"team": principal.team, "views": views, "running": running}
    )
