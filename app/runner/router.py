"""The job protocol under /api/v1/runner: runner tokens only, each job call bound to its lease (HTTP only).

The rules are in app.runner.service. Uploads stream to the attempt's upload directory under their own size
limits (the body-limit middleware leaves them to this router).
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request, status
from fastapi.responses import FileResponse

from app.auth.service import Principal, authenticate
from app.deps import AppSettings, BearerCredentials, DbSession
from app.errors import Forbidden, InvalidInput, PayloadTooLarge
from app.openapi import errors
from app.runner import hosts, service
from app.runner.schemas import (
    ClaimRead,
    ClaimRequest,
    FailureRequest,
    FinishRequest,
    HeartbeatRead,
    HeartbeatRequest,
    JobState,
    LeaseRequest,
    RunnerRead,
)
from app.settings import Settings
from app.tables import Evaluation, TokenScope
from app.types import IdPath

router = APIRouter(prefix="/api/v1/runner", tags=["runner"], responses=errors(401, 403, 422))

MAX_FEATURES_BYTES = 64 * 1024 * 1024
MAX_LOG_BYTES = 1024 * 1024  # a case's log tail, as the workers keep it (worker.pipeline.MAX_LOG_BYTES)


def get_runner(db: DbSession, credentials: BearerCredentials) -> Principal:
    """A runner token (401 when unknown, expired or revoked: the host stops taking jobs)."""
    principal = authenticate(db, token=credentials.credentials if credentials else None)
    if principal.token.scope is not TokenScope.RUNNER:
        raise Forbidden("a runner token is required (midog-eval admin create-runner-token NAME)")
    db.commit()  # end the lookup's transaction (app.deps says why)
    return principal


Runner = Annotated[Principal, Depends(get_runner)]


def get_job(
    db: DbSession,
    runner: Runner,
    evaluation_id: IdPath,
    attempt: IdPath,
    x_job_key: Annotated[str, Header(max_length=200)] = "",
) -> Evaluation:
    return service.held_job(db, token=runner.token, evaluation_id=evaluation_id, attempt=attempt, job_key=x_job_key)


Job = Annotated[Evaluation, Depends(get_job)]
JOB = "/jobs/{evaluation_id}/attempts/{attempt}"


@router.get("/ping", summary="Who this runner token is, and the lease timing (401 once it is revoked)")
def ping(runner: Runner, settings: AppSettings) -> RunnerRead:
    return RunnerRead(
        token_id=runner.token.id,
        name=runner.token.name,
        lease_s=settings.lease_expiry_s,
        heartbeat_s=settings.lease_heartbeat_s,
    )


@router.post(
    "/heartbeat",
    summary="The GPU host reports itself: its classes, GPUs and cache (the organisers' worker list)",
    responses=errors(401, 422),
)
def heartbeat(db: DbSession, runner: Runner, settings: AppSettings, body: HeartbeatRequest) -> HeartbeatRead:
    name = hosts.record_heartbeat(db, token=runner.token, report=body)
    return HeartbeatRead(worker=name, heartbeat_s=settings.worker_heartbeat_s)


@router.post("/jobs/{evaluation_id}/claim", summary="Claim one run of an evaluation", responses=errors(401, 404, 409))
def claim(db: DbSession, runner: Runner, settings: AppSettings, evaluation_id: IdPath, body: ClaimRequest) -> ClaimRead:
    job = service.claim_job(
        db,
        token=runner.token,
        evaluation_id=evaluation_id,
        host=body.host,
        settings=settings,
        gpu_classes=body.gpu_classes,
    )
    return ClaimRead(
        claimed=job.claimed,
        outcome=job.outcome,
        attempt=job.attempt,
        job_key=job.job_key,
        lease_s=settings.lease_expiry_s,
        heartbeat_s=settings.lease_heartbeat_s,
    )


@router.post(JOB + "/lease", summary="Renew the lease (and record progress)", responses=errors(401, 409))
def renew(db: DbSession, job: Job, settings: AppSettings, body: LeaseRequest) -> JobState:
    service.renew(db, row=job, settings=settings, progress=body.progress, message=body.message)
    return JobState(status="running")


@router.get(JOB + "/manifest", summary="The job's inputs by SHA-256 (never ground truth)", responses=errors(401, 409))
def manifest(db: DbSession, job: Job, settings: AppSettings) -> dict[str, object]:
    return service.manifest(db, row=job, settings=settings)


@router.get(JOB + "/files/{sha256}", summary="One input of the job by SHA-256", responses=errors(401, 404, 409))
def fetch(db: DbSession, job: Job, settings: AppSettings, sha256: str) -> FileResponse:
    path = service.input_path(db, row=job, settings=settings, sha256=sha256)
    return FileResponse(path, media_type="application/octet-stream")


async def _receive(request: Request, destination: Path, limit: int) -> int:
    """Stream the body to `destination` (temp file + rename), refusing it past `limit` bytes."""
    partial = destination.with_name(f".{destination.name}.{secrets.token_hex(4)}.part")
    size = 0
    try:
        with partial.open("wb") as out:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"upload exceeds the limit of {limit} bytes")
                out.write(chunk)
        partial.replace(destination)
    finally:
        partial.unlink(missing_ok=True)
    return size


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


@router.put(JOB + "/predictions", summary="Upload the run's output file", responses=errors(401, 409, 413))
async def upload_predictions(request: Request, job: Job) -> JobState:
    settings = _settings(request)
    await _receive(request, service.upload_dir(settings, job) / "predictions.json", settings.max_predictions_bytes)
    return JobState(status="received")


@router.put(JOB + "/features", summary="Upload the run's per-case features (JSON)", responses=errors(401, 409, 413))
async def upload_features(request: Request, job: Job) -> JobState:
    settings = _settings(request)
    await _receive(request, service.upload_dir(settings, job) / "features.json", MAX_FEATURES_BYTES)
    return JobState(status="received")


@router.put(JOB + "/logs/{case}", summary="Upload one case's log tail", responses=errors(401, 409, 413, 422))
async def upload_log(request: Request, job: Job, case: str) -> JobState:
    from app.storage import evaluation_logs_dir

    if not case or "/" in case or case.startswith(".") or "\x00" in case or len(case) > 255:
        raise InvalidInput("case: a case name of the test set (no '/', not starting with '.')")
    settings = _settings(request)
    directory = evaluation_logs_dir(settings.storage_path, job.id)
    directory.mkdir(parents=True, exist_ok=True)
    await _receive(request, directory / f"{case}.log", MAX_LOG_BYTES)
    return JobState(status="received")


@router.post(
    JOB + "/finish",
    status_code=status.HTTP_202_ACCEPTED,
    summary="The output is uploaded: score it (on the cpu queue)",
    responses=errors(401, 409),
)
def finish(db: DbSession, job: Job, settings: AppSettings, body: FinishRequest) -> JobState:
    import json

    directory = service.upload_dir(settings, job)
    record = {"run_seconds": body.run_seconds, "run_info": body.run_info}
    text = json.dumps(record)
    if len(text) > 64 * 1024:
        raise InvalidInput("run_info: at most 64 KiB of JSON")
    (directory / "run.json").write_text(text, encoding="utf-8")
    service.finish(db, row=job, settings=settings)
    return JobState(status="scoring")


@router.post(JOB + "/failure", summary="The run failed (participant or infrastructure)", responses=errors(401, 409))
def failure(db: DbSession, job: Job, settings: AppSettings, body: FailureRequest) -> JobState:
    outcome = service.report_failure(
        db, row=job, settings=settings, kind=body.kind, message=body.message, detail=body.detail
    )
    return JobState(status=outcome)
