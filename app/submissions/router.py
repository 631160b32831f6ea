"""Participant submissions: streamed upload, own team's list and status, SSE status stream, quota (HTTP only)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, status
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from app.challenges.service import get_phase
from app.deps import AppSettings, CurrentParticipant, DbSession
from app.openapi import errors
from app.settings import Settings
from app.submissions import intake, service
from app.submissions import logs as run_logs
from app.submissions.schemas import QuotaRead, SubmissionLogs, SubmissionRead
from app.tables import TERMINAL_STATUSES, ApiToken, SubmissionKind, utcnow
from app.types import MAX_ID, IdPath

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
    return await intake.receive_submission(request, db, settings, principal, phase_id, kind)


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
    return service.team_submission_view(db, submission_id=submission_id, team_id=principal.team.id)


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
    return run_logs.read_team_logs(
        db, submission_id=submission_id, team_id=principal.team.id, storage_dir=settings.storage_path, case=case
    )


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
    return service.cancel_team_submission(db, submission_id=submission_id, team_id=principal.team.id)


@router.get(
    "/phases/{phase_id}/quota",
    summary="The caller's team's remaining submissions in a phase",
    responses=errors(401, 403, 404, 422, 503),
)
def get_quota(db: DbSession, principal: CurrentParticipant, phase_id: IdPath) -> QuotaRead:
    assert principal.team is not None
    phase = get_phase(db, phase_id=phase_id)
    return service.quota_status(db, phase=phase, team=principal.team)
