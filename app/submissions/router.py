"""Participant submissions: streamed upload, own team's list and status, SSE status stream, quota (HTTP only)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, status
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ValidationError
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from app.challenges.service import get_phase
from app.deps import AppSettings, CurrentParticipant, DbSession
from app.errors import InvalidInput
from app.models import TERMINAL_STATUSES, ApiToken, RunMode, SubmissionKind, utcnow
from app.names import InvalidNameError, clean_name
from app.openapi import errors
from app.scoring import canonical_options
from app.settings import Settings
from app.submissions import logs as run_logs
from app.submissions import service
from app.submissions.checker import Checker
from app.submissions.checks import CheckFailedError, case_extents
from app.submissions.schemas import QuotaRead, SubmissionLogs, SubmissionRead
from app.submissions.upload import ReceivedFiles, ReceivedUpload, receive_files, receive_upload
from app.submissions.validation import (
    ArchiveInvalid,
    PredictionsInvalid,
    check_magic,
    check_model_magic,
    predictions_suffix,
)
from app.types import MAX_ID, IdPath, LongText, ShortText, Url

router = APIRouter(prefix="/api/v1", tags=["submissions"])

UPLOAD_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {
                    "file": {
                        "type": "string",
                        "format": "binary",
                        "description": "Predictions (JSON/CSV), a model archive (zip) or a container image (tar "
                        "or tar.gz). Required, except for a container submission that reuses an earlier image.",
                    },
                    "model": {
                        "type": "string",
                        "format": "binary",
                        "description": "Container submissions: a model.tar.gz extracted read-only to /opt/ml/model.",
                    },
                    "image_submission": {
                        "type": "string",
                        "pattern": "^[0-9]{1,18}$",
                        "description": "Container submissions without `file`: the id of an earlier container "
                        "submission of your team whose image runs with this `model`.",
                    },
                    "run_mode": {
                        "type": "string",
                        "enum": ["exec", "invoke"],
                        "description": "Container submissions: how the image runs (default: the phase's run_mode).",
                    },
                    "method_name": {"type": "string", "maxLength": 200},
                    "description": {"type": "string", "maxLength": 20000},
                    "paper_url": {"type": "string", "maxLength": 500, "pattern": "^(https?://\\S+)?$"},
                },
            }
        }
    },
}


class SubmissionForm(BaseModel):
    method_name: ShortText = ""
    description: LongText = ""
    paper_url: Url = ""


def _form(fields: dict[str, str]) -> service.SubmissionFields:
    try:
        form = SubmissionForm.model_validate({k: v for k, v in fields.items() if k in SubmissionForm.model_fields})
    except ValidationError as exc:
        first = exc.errors()[0]
        raise InvalidInput(f"{'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    try:
        # The method name is shown on the leaderboard beside the team's: it may not hide characters either.
        method = clean_name(form.method_name, field="method_name") if form.method_name.strip() else ""
    except InvalidNameError as exc:
        raise InvalidInput(str(exc)) from None
    return service.SubmissionFields(method, form.description, form.paper_url)


@router.post(
    "/phases/{phase_id}/submissions",
    status_code=status.HTTP_201_CREATED,
    summary="Submit a file to a phase (multipart, streamed; predictions are validated at once)",
    description=(
        "The file is streamed to disk with the size limit enforced while reading (413) and hashed while it is "
        "written. A predictions file is parsed against the phase's test set: an invalid one gets a 422 naming "
        "the case and the point. Model archives and container images are checked without loading them (sizes, "
        "members, manifest, image config): an invalid one gets a 422 with one line. "
        "Quotas are per team (429 with `reset_at`); one active evaluation per team."
    ),
    openapi_extra={"requestBody": UPLOAD_BODY},
    responses=errors(401, 403, 404, 409, 413, 415, 422, 429, 503),
)
async def submit(
    request: Request,
    db: DbSession,
    settings: AppSettings,
    principal: CurrentParticipant,
    phase_id: IdPath,
    kind: Annotated[SubmissionKind, Query(description="What the file is.")] = SubmissionKind.PREDICTIONS,
) -> SubmissionRead:
    assert principal.team is not None

    def precheck() -> tuple[dict[str, Any], str, str]:
        phase = get_phase(db, phase_id=phase_id)
        service.check_can_submit(db, phase=phase, team=principal.team, kind=kind)  # type: ignore[arg-type]
        cases = phase.test_set.cases if phase.test_set is not None else {}
        task = phase.test_set.task if phase.test_set is not None else "detection"
        rules = str(canonical_options(phase.scoring_options)["rules"])
        # no transaction (nor pooled connection) is held while a possibly huge body streams in
        db.commit()
        return cases, task, rules

    cases, task, rules = await run_in_threadpool(precheck)
    tmp_dir = settings.storage_path / "tmp"
    if kind is SubmissionKind.CONTAINER:
        limits = {"file": settings.max_upload_bytes(kind), "model": settings.max_model_tarball_bytes}
        received = await receive_files(request, tmp_dir=tmp_dir, limits=limits)
    else:
        single = await receive_upload(request, tmp_dir=tmp_dir, max_file_bytes=settings.max_upload_bytes(kind))
        received = ReceivedFiles({"file": single}, single.fields)
    try:
        upload = received.files.get("file")
        fields = _form(received.fields)
        checker: Checker = request.app.state.checker
        parts = service.ContainerParts()
        if kind is SubmissionKind.CONTAINER:
            parts = await _container_parts(db, settings, principal, received, checker)
            if upload is not None:
                check_magic(kind, upload.head)
                try:
                    await checker.archive(kind.value, upload.path, task=task)
                except CheckFailedError as exc:
                    raise ArchiveInvalid(str(exc)) from None
        else:
            assert upload is not None
            for name in CONTAINER_FIELDS:
                if received.fields.get(name):
                    raise InvalidInput(f"{name}: only container submissions take this field")
            check_magic(kind, upload.head)
            if kind is SubmissionKind.PREDICTIONS:
                await _check_predictions(checker, settings, upload, cases=cases, task=task, rules=rules)
            else:
                try:
                    await checker.archive(kind.value, upload.path, task=task)
                except CheckFailedError as exc:
                    raise ArchiveInvalid(str(exc)) from None
        return await run_in_threadpool(_create, db, settings, principal, phase_id, kind, upload, fields, parts)
    finally:
        received.discard()  # a no-op for each file once it has been moved into storage


CONTAINER_FIELDS = ("image_submission", "run_mode")


async def _check_predictions(
    checker: Checker, settings: Settings, upload: ReceivedUpload, *, cases: dict[str, Any], task: str, rules: str
) -> None:
    upload.path = upload.path.rename(upload.path.with_suffix(predictions_suffix(upload.head)))
    try:
        if task == "classification":
            await checker.classifications(
                upload.path,
                patches={name: int(case.get("patches") or 0) for name, case in cases.items()},
                display_name=upload.filename or "predictions",
            )
        else:
            await checker.predictions(
                upload.path,
                cases=case_extents(cases),
                max_points_per_case=settings.max_points_per_case,
                max_total_points=settings.max_total_points,
                display_name=upload.filename or "predictions",
                rules=rules,
            )
    except CheckFailedError as exc:
        raise PredictionsInvalid(str(exc)) from None


async def _container_parts(
    db: Session, settings: Settings, principal: Any, received: ReceivedFiles, checker: Checker
) -> service.ContainerParts:
    """A container submission's model tarball (checked), the earlier image it reuses and its run mode; every
    refusal names its field."""
    mode_field = received.fields.get("run_mode", "").strip()
    try:
        run_mode = RunMode(mode_field) if mode_field else None
    except ValueError:
        raise InvalidInput("run_mode: exec or invoke (leave it out for the phase's mode)") from None
    model = received.files.get("model")
    image_field = received.fields.get("image_submission", "").strip()
    image_from = None
    if image_field:
        if "file" in received.files:
            raise InvalidInput(
                "image_submission: send either an image (file) or the id of an earlier submission whose image to "
                "reuse, not both"
            )
        if not image_field.isdigit() or int(image_field) > MAX_ID:
            raise InvalidInput("image_submission: the id of an earlier container submission of your team")
        if model is None:
            raise InvalidInput(f"model: reusing the image of submission {image_field} needs a model tarball")

        def earlier() -> Any:
            try:
                return service.reusable_image(
                    db, team_id=principal.team.id, submission_id=int(image_field), storage_dir=settings.storage_path
                )
            finally:
                db.commit()  # no transaction is held while the model tarball is checked

        image_from = await run_in_threadpool(earlier)
    elif "file" not in received.files:
        raise InvalidInput(
            "file: a container submission needs its image (file), or a model tarball (model) with "
            "image_submission naming an earlier container submission of your team"
        )
    if model is not None:
        check_model_magic(model.head)
        try:
            await checker.model_tarball(model.path)
        except CheckFailedError as exc:
            raise ArchiveInvalid(f"model: {exc}") from None
    return service.ContainerParts(model=model, image_from=image_from, run_mode=run_mode)


def _create(
    db: Session,
    settings: Settings,
    principal: Any,
    phase_id: int,
    kind: SubmissionKind,
    upload: ReceivedUpload | None,
    fields: service.SubmissionFields,
    parts: service.ContainerParts,
) -> SubmissionRead:
    phase = get_phase(db, phase_id=phase_id)
    submission = service.create_submission(
        db,
        phase=phase,
        principal=principal,
        kind=kind,
        upload=upload,
        fields=fields,
        storage_dir=settings.storage_path,
        container=parts,
    )
    db.refresh(submission, ["evaluations"])
    return service.participant_view(submission)


@router.get(
    "/submissions",
    summary="The caller's team's submissions, newest first",
    responses=errors(401, 403, 422, 503),
)
def list_submissions(
    db: DbSession,
    principal: CurrentParticipant,
    phase_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> list[SubmissionRead]:
    assert principal.team is not None
    rows = service.list_team_submissions(db, team_id=principal.team.id, phase_id=phase_id, limit=limit, offset=offset)
    return [service.participant_view(s) for s in rows]


@router.get(
    "/submissions/{submission_id}",
    summary="One submission of the caller's team: status, progress and (per the phase's policy) results",
    responses=errors(401, 403, 404, 422, 503),
)
def get_submission(db: DbSession, principal: CurrentParticipant, submission_id: IdPath) -> SubmissionRead:
    assert principal.team is not None
    submission = service.get_team_submission(db, submission_id=submission_id, team_id=principal.team.id)
    return service.participant_view(submission)


@router.get(
    "/submissions/{submission_id}/logs",
    summary="The run logs of one of the team's model or container submissions, where the phase shows them",
    description=(
        "The last 500 lines of each case's stdout and stderr from the current evaluation's runs, as the worker "
        "kept them. Only in phases whose `show_logs` is on (403 otherwise: a hidden test phase shows the "
        "failure line and nothing else). A listing gives the last 64 KiB of each case; `case` gives one whole."
    ),
    responses=errors(401, 403, 404, 422, 503),
)
def get_logs(
    db: DbSession,
    settings: AppSettings,
    principal: CurrentParticipant,
    submission_id: IdPath,
    case: Annotated[str | None, Query(min_length=1, max_length=255)] = None,
) -> SubmissionLogs:
    assert principal.team is not None
    submission = service.get_team_submission(db, submission_id=submission_id, team_id=principal.team.id)
    run_logs.check_participant_may_read(submission)
    return run_logs.read_logs(submission, storage_dir=settings.storage_path, case=case)


@router.get(
    "/submissions/{submission_id}/events",
    summary="Server-sent events: the submission's status and progress until it finishes",
    description=(
        "A `text/event-stream`: one `status` event (JSON like StatusEvent) whenever status or progress "
        "changes, comments as heartbeats, and an `end` event once the evaluation is finished."
    ),
    response_class=StreamingResponse,
    responses={
        200: {"description": "Event stream", "content": {"text/event-stream": {"schema": {"type": "string"}}}},
        **errors(401, 403, 404, 422, 503),
    },
)
def submission_events(
    request: Request, db: DbSession, settings: AppSettings, principal: CurrentParticipant, submission_id: IdPath
) -> StreamingResponse:
    assert principal.team is not None
    service.get_team_submission(db, submission_id=submission_id, team_id=principal.team.id)
    factory: sessionmaker[Session] = request.app.state.session_factory
    return StreamingResponse(
        _event_stream(request, factory, submission_id, settings, token_id=principal.token.id),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _snapshot(factory: sessionmaker[Session], submission_id: int) -> dict[str, Any]:
    with factory() as session:
        return service.status_event(session, submission_id=submission_id).model_dump(mode="json")


def _token_valid(factory: sessionmaker[Session], token_id: int) -> bool:
    with factory() as session:
        token = session.get(ApiToken, token_id)
        if token is None or token.revoked_at is not None:
            return False
        return token.expires_at is None or token.expires_at > utcnow()


async def _event_stream(
    request: Request, factory: sessionmaker[Session], submission_id: int, settings: Settings, *, token_id: int
) -> AsyncIterator[str]:
    """Status events until the evaluation ends, the client leaves, the stream's time is up, or its token is
    revoked or expires (checked every `sse_token_recheck_s`)."""
    deadline = time.monotonic() + settings.sse_max_duration_s
    last: dict[str, Any] | None = None
    last_sent = time.monotonic()
    checked = time.monotonic()
    while True:
        if time.monotonic() - checked >= settings.sse_token_recheck_s:
            checked = time.monotonic()
            if not await run_in_threadpool(_token_valid, factory, token_id):
                yield 'event: end\ndata: {"reason": "token revoked or expired"}\n\n'
                return
        snapshot = await run_in_threadpool(_snapshot, factory, submission_id)
        if snapshot != last:
            last = snapshot
            last_sent = time.monotonic()
            yield f"event: status\ndata: {json.dumps(snapshot)}\n\n"
        if snapshot["status"] in {s.value for s in TERMINAL_STATUSES}:
            yield "event: end\ndata: {}\n\n"
            return
        if time.monotonic() >= deadline or await request.is_disconnected():
            return
        if time.monotonic() - last_sent > 15:
            last_sent = time.monotonic()
            yield ": keep-alive\n\n"
        await asyncio.sleep(settings.sse_poll_interval_s)


@router.post(
    "/submissions/{submission_id}/cancel",
    summary="Withdraw one of the team's submissions while its evaluation is still queued",
    responses=errors(401, 403, 404, 409, 422, 503),
)
def cancel_submission(db: DbSession, principal: CurrentParticipant, submission_id: IdPath) -> SubmissionRead:
    assert principal.team is not None
    submission = service.get_team_submission(db, submission_id=submission_id, team_id=principal.team.id)
    service.cancel_queued(db, submission=submission)
    db.refresh(submission, ["evaluations"])
    return service.participant_view(submission)


@router.get(
    "/phases/{phase_id}/quota",
    summary="The caller's team's remaining submissions in a phase",
    responses=errors(401, 403, 404, 422, 503),
)
def get_quota(db: DbSession, principal: CurrentParticipant, phase_id: IdPath) -> QuotaRead:
    assert principal.team is not None
    phase = get_phase(db, phase_id=phase_id)
    return service.quota_status(db, phase=phase, team=principal.team)
