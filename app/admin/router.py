"""Organiser API under /api/v1/admin (organiser tokens only; participants get 403). HTTP only."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi import Path as PathParam
from pydantic import ValidationError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.admin import listings, service, tokens
from app.admin.audit import record_admin_writes
from app.admin.schemas import (
    AuditEventRead,
    BundleApplied,
    PhaseComputeRead,
    PhaseProgressRead,
    ReevaluateRead,
    SubmissionAdminRead,
    SubmissionUpdate,
    TeamAdminRead,
    TeamUpdate,
    TestSetCreate,
    TestSetRead,
    TestSetUploadForm,
    TokenCreate,
    TokenRead,
)
from app.auth.schemas import TokenIssued
from app.bundles.apply import apply_bundle
from app.bundles.schema import Bundle
from app.challenges import service as challenges
from app.challenges.schemas import (
    ChallengeCreate,
    ChallengeRead,
    ChallengeUpdate,
    PhaseCreate,
    PhaseRead,
    PhaseUpdate,
)
from app.deps import AdminUser, AppSettings, DbSession, get_admin
from app.errors import InvalidInput
from app.openapi import errors
from app.settings import Settings
from app.submissions.logs import read_logs
from app.submissions.schemas import SubmissionLogs
from app.submissions.upload import receive_upload
from app.types import MAX_ID, IdPath
from app.worker_hosts import service as workers
from app.worker_hosts.schemas import WorkerAdminRead
from worker.safe_delete import discard_tree


def _audit(request: Request, db: DbSession, principal: AdminUser) -> Iterator[None]:
    yield from record_admin_writes(request, db, principal)


router = APIRouter(
    prefix="/api/v1/admin",
    tags=["admin"],
    dependencies=[Depends(get_admin), Depends(_audit, scope="function")],
    responses=errors(401, 403, 422, 503),
)

Limit = Annotated[int, Query(ge=1, le=1000)]
Offset = Annotated[int, Query(ge=0, le=MAX_ID)]
OptionalId = Annotated[int | None, Query(ge=1, le=MAX_ID)]


# workers


@router.get(
    "/workers",
    summary="Every worker that reported itself: alive or not, what it can run, why not, isolation opt-outs",
)
def list_workers(db: DbSession, settings: AppSettings) -> list[WorkerAdminRead]:
    return [workers.admin_view(row, stale_after_s=settings.worker_stale_after_s) for row in workers.worker_rows(db)]


@router.delete(
    "/workers/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Forget a worker that is gone for good (a host taken away); health stops counting it as down",
    responses=errors(404),
)
def forget_worker(db: DbSession, name: Annotated[str, PathParam(max_length=200)]) -> None:
    workers.forget_worker(db, name=name)


@router.get(
    "/compute",
    summary="GPU-hours spent per phase and team against each phase's budget, and what is queued or running",
)
def compute(db: DbSession) -> list[PhaseComputeRead]:
    from app.admin.compute import compute_report

    return compute_report(db)


# challenges and phases
@router.get("/challenges", summary="All challenges, unpublished included")
def list_challenges(db: DbSession) -> list[ChallengeRead]:
    return [challenges.challenge_read(c) for c in challenges.list_challenges(db, include_unpublished=True)]


@router.post("/challenges", status_code=status.HTTP_201_CREATED, summary="Create a challenge", responses=errors(409))
def create_challenge(db: DbSession, body: ChallengeCreate) -> ChallengeRead:
    challenge = challenges.create_challenge(db, data=body)
    db.refresh(challenge, ["phases"])
    return challenges.challenge_read(challenge)


@router.patch("/challenges/{challenge_id}", summary="Update a challenge", responses=errors(404))
def update_challenge(db: DbSession, challenge_id: IdPath, body: ChallengeUpdate) -> ChallengeRead:
    challenge = challenges.get_challenge_by_id(db, challenge_id=challenge_id)
    return challenges.challenge_read(challenges.update_challenge(db, challenge=challenge, data=body))


@router.post(
    "/challenges/{challenge_id}/phases",
    status_code=status.HTTP_201_CREATED,
    summary="Create a phase",
    description=(
        "A phase that accepts `model` or `container` submissions needs a running worker that can run them "
        "(422 names the missing backend otherwise): participants' uploads would only fail."
    ),
    responses=errors(404, 409),
)
def create_phase(db: DbSession, settings: AppSettings, challenge_id: IdPath, body: PhaseCreate) -> PhaseRead:
    workers.require_capable_workers(
        db, kinds=[k.value for k in body.allowed_kinds], stale_after_s=settings.worker_stale_after_s
    )
    challenge = challenges.get_challenge_by_id(db, challenge_id=challenge_id)
    return challenges.phase_read(challenges.create_phase(db, challenge=challenge, data=body))


@router.patch(
    "/phases/{phase_id}",
    summary="Update a phase",
    description=(
        "Adding `model` or `container` to allowed_kinds needs a running worker that can run them (422). "
        "Changing the scoring (a scored option of `scoring_options`, or `test_set_id`) of a phase whose "
        "submissions are scored or being scored is refused (409, naming what changed) unless `reevaluate=true`: "
        "then every submission is re-evaluated under the new scoring in a new evaluation version, the board "
        "shows only results of the new scoring, and `GET /admin/phases/{phase_id}/progress` follows the work."
    ),
    responses=errors(404, 409),
)
def update_phase(
    db: DbSession,
    settings: AppSettings,
    phase_id: IdPath,
    body: PhaseUpdate,
    reevaluate: Annotated[
        bool, Query(description="Confirm re-evaluating every submission on a scoring change.")
    ] = False,
) -> PhaseRead:
    phase = service.update_phase(
        db, phase_id=phase_id, data=body, reevaluate=reevaluate, stale_after_s=settings.worker_stale_after_s
    )
    return challenges.phase_read(phase)


@router.post(
    "/bundles",
    summary="Apply a challenge bundle (what `midog-eval admin apply` sends) all or nothing",
    description=(
        "The body is the bundle as JSON (docs/bundles.md). Its plan is computed from this server's state and "
        "every step runs in one transaction: if any step is refused (a phase's dates, a test set's path, a "
        "scoring change of a scored phase), nothing of the bundle is applied and the error names the step. "
        "`dry_run=true` validates every step the same way and then discards them."
    ),
    responses=errors(404, 409),
)
def apply_bundle_endpoint(
    db: DbSession,
    settings: AppSettings,
    body: Bundle,
    dry_run: Annotated[bool, Query(description="Validate every step, then change nothing.")] = False,
) -> BundleApplied:
    steps = apply_bundle(db, body, stale_after_s=settings.worker_stale_after_s)
    if dry_run:
        db.rollback()
    return BundleApplied(steps=steps, applied=bool(steps) and not dry_run)


@router.post(
    "/phases/{phase_id}/reevaluate",
    summary="Re-evaluate every submission of a phase under a new evaluation version (old results kept)",
    description="Also adopts the server's current scorer version into the phase's scoring fingerprint.",
    responses=errors(404),
)
def reevaluate_phase(db: DbSession, phase_id: IdPath) -> ReevaluateRead:
    phase = challenges.get_phase(db, phase_id=phase_id, include_unpublished=True)
    queued = service.reevaluate_phase(db, phase=phase)
    return ReevaluateRead(
        phase_id=phase.id,
        evaluation_version=phase.evaluation_version,
        scoring_fingerprint=phase.scoring_fingerprint,
        queued=queued,
    )


@router.get(
    "/phases/{phase_id}/progress",
    summary="How far the phase's current evaluation version has got (e.g. after a re-evaluation)",
    responses=errors(404),
)
def phase_progress(db: DbSession, phase_id: IdPath) -> PhaseProgressRead:
    phase = challenges.get_phase(db, phase_id=phase_id, include_unpublished=True)
    return service.phase_progress(db, phase=phase)


@router.get(
    "/phases/{phase_id}/results.csv",
    summary="Every result of a phase as CSV (all versions; formula-injection safe)",
    response_class=Response,
    responses={
        200: {"description": "CSV", "content": {"text/csv": {"schema": {"type": "string"}}}},
        **errors(404),
    },
)
def export_results(db: DbSession, phase_id: IdPath) -> Response:
    listings.require_phase(db, phase_id=phase_id)
    return Response(
        service.results_csv(db, phase_id=phase_id),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="results-phase-{phase_id}.csv"'},
    )


# test sets
@router.get("/test-sets", summary="Registered test sets")
def list_test_sets(db: DbSession) -> list[TestSetRead]:
    return [TestSetRead.model_validate(t) for t in listings.registered_test_sets(db)]


@router.post(
    "/test-sets",
    status_code=status.HTTP_201_CREATED,
    summary="Register a test set from a server directory (manifest, images and ground truth are checked)",
    responses=errors(409),
)
def register_test_set(db: DbSession, body: TestSetCreate) -> TestSetRead:
    return TestSetRead.model_validate(service.register_test_set(db, data=body))


@router.get(
    "/test-sets/{test_set_id}/domain-report",
    summary="The test set's domain report page (written by `midog-eval dataset report`)",
    description=(
        "Serves `<test set>/domain-report/index.html`, the self-contained page that `midog-eval dataset report "
        "DIR --out DIR/domain-report` writes: per scanner stain, colour, sharpness and resolution, the t-SNE of "
        "tile features and the domain-gap number. 404, saying the command to run, while it is not there."
    ),
    response_class=Response,
    responses={200: {"content": {"text/html": {"schema": {"type": "string"}}}}, **errors(404)},
)
def domain_report(db: DbSession, test_set_id: IdPath) -> Response:
    page = service.domain_report_page(db, test_set_id=test_set_id)
    return Response(page.html, media_type="text/html; charset=utf-8", headers={"Content-Security-Policy": page.policy})


TEST_SET_UPLOAD_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["name", "file"],
                "properties": {
                    "name": {"type": "string", "minLength": 1, "maxLength": 100},
                    "description": {"type": "string", "maxLength": 20000},
                    "file": {
                        "type": "string",
                        "format": "binary",
                        "description": "A zip or a tar (plain, gzip, bzip2 or xz) holding manifest.json, images/ "
                        "and ground-truth/ at the top level or inside one folder.",
                    },
                },
            }
        }
    },
}


@router.post(
    "/test-sets/upload",
    status_code=status.HTTP_201_CREATED,
    summary="Register a test set from an uploaded archive (zip or tar; pre-scanned, then checked like a directory)",
    description=(
        "The archive is streamed to a temp file with `max_test_set_bytes` enforced while reading (413). Its "
        "members are pre-scanned before anything is extracted: only regular files and directories (no links, "
        "devices or FIFOs), no absolute names, '..' components or backslashes, a bounded member count, a "
        "bounded total size and compression ratio (bombs). It is then extracted into a fresh directory under "
        "the storage directory, checked exactly like `POST /test-sets` (manifest, images and their sha256, "
        "ground truth) and moved into `<storage>/test-sets/`. Any failure is a 422 with one line naming the "
        "member or field, and leaves nothing behind."
    ),
    openapi_extra={"requestBody": TEST_SET_UPLOAD_BODY},
    responses=errors(409, 413, 415),
)
async def upload_test_set(request: Request, db: DbSession, settings: AppSettings) -> TestSetRead:
    await run_in_threadpool(db.commit)  # no transaction (nor pooled connection) held while the body streams in
    upload = await receive_upload(
        request, tmp_dir=settings.storage_path / "tmp", max_file_bytes=settings.max_test_set_bytes
    )
    try:
        try:
            form = TestSetUploadForm.model_validate(
                {k: v for k, v in upload.fields.items() if k in TestSetUploadForm.model_fields}
            )
        except ValidationError as exc:
            first = exc.errors()[0]
            raise InvalidInput(f"{'.'.join(map(str, first['loc']))}: {first['msg']}") from None
        return await run_in_threadpool(_register_upload, db, settings, form, upload.path)
    finally:
        upload.discard()


def _register_upload(db: Session, settings: Settings, form: TestSetUploadForm, archive: Path) -> TestSetRead:
    test_set = service.register_uploaded_test_set(
        db,
        name=form.name,
        description=form.description,
        archive=archive,
        storage_dir=settings.storage_path,
        max_archive_bytes=settings.max_test_set_bytes,
    )
    directory = Path(test_set.manifest_path).parent
    try:
        read = TestSetRead.model_validate(test_set)
        db.commit()  # here rather than after the response, so a failed commit can remove the directory
    except BaseException:
        discard_tree(directory)
        raise
    return read


# teams and tokens
@router.get("/teams", summary="All teams")
def list_teams(db: DbSession, limit: Limit = 100, offset: Offset = 0) -> list[TeamAdminRead]:
    return [TeamAdminRead.model_validate(t) for t in listings.teams(db, limit=limit, offset=offset)]


@router.patch("/teams/{team_id}", summary="Approve or disqualify a team", responses=errors(404))
def update_team(db: DbSession, team_id: IdPath, body: TeamUpdate) -> TeamAdminRead:
    team = service.get_team(db, team_id=team_id)
    service.update_team(db, team=team, is_approved=body.is_approved, is_disqualified=body.is_disqualified)
    return TeamAdminRead.model_validate(team)


@router.get("/tokens", summary="API tokens (hashes are never shown)")
def list_tokens(db: DbSession, limit: Limit = 100, offset: Offset = 0) -> list[TokenRead]:
    return [TokenRead.model_validate(t) for t in listings.tokens(db, limit=limit, offset=offset)]


@router.post(
    "/tokens",
    status_code=status.HTTP_201_CREATED,
    summary="Create a token (shown once in this response)",
    description=(
        "Scopes: `participant` (one participant's), `organiser` (reads and administers), `organiser_read` (reads "
        "the organiser API only), `runner` (a GPU host's: the job protocol under /api/v1/runner only). Without "
        "`expires_at` a token expires after `organiser_token_ttl_days` (organiser scopes), `runner_token_ttl_days` "
        "(runners) or `login_token_ttl_hours` (participants); a time in the past, or later than "
        "`token_max_lifetime_days` (default 365) from now, is refused."
    ),
    responses=errors(404),
)
def create_api_token(db: DbSession, settings: AppSettings, body: TokenCreate) -> TokenIssued:
    issued = tokens.issue_token(
        db,
        settings,
        scope=body.scope,
        participant_id=body.participant_id,
        name=body.name,
        expires_at=body.expires_at,
    )
    return TokenIssued.of(issued)


@router.get("/audit", summary="The audit log: every write through this API (who, what, when), newest first")
def list_audit_events(db: DbSession, limit: Limit = 100, offset: Offset = 0) -> list[AuditEventRead]:
    return [AuditEventRead.model_validate(row) for row in listings.audit_events(db, limit=limit, offset=offset)]


@router.delete(
    "/tokens/{token_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Revoke a token",
    responses=errors(404),
)
def revoke_api_token(db: DbSession, token_id: IdPath) -> Response:
    listings.revoke_token_by_id(db, token_id=token_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# submissions
@router.get("/submissions", summary="Submissions with evaluation details (errors, per-case counts)")
def list_submissions(
    db: DbSession, phase_id: OptionalId = None, team_id: OptionalId = None, limit: Limit = 100, offset: Offset = 0
) -> list[SubmissionAdminRead]:
    rows = service.list_submissions(db, phase_id=phase_id, team_id=team_id, limit=limit, offset=offset)
    return [service.admin_view(s) for s in rows]


@router.get("/submissions/{submission_id}", summary="One submission in full", responses=errors(404))
def get_submission(db: DbSession, submission_id: IdPath) -> SubmissionAdminRead:
    return service.admin_view(service.get_submission(db, submission_id=submission_id))


@router.get(
    "/submissions/{submission_id}/logs",
    summary="The run logs of a submission (each case's last 500 lines of stdout and stderr), whatever the phase",
    responses=errors(404),
)
def get_submission_logs(
    db: DbSession,
    settings: AppSettings,
    submission_id: IdPath,
    case: Annotated[str | None, Query(min_length=1, max_length=255)] = None,
) -> SubmissionLogs:
    submission = service.get_submission(db, submission_id=submission_id)
    return read_logs(submission, storage_dir=settings.storage_path, case=case)


@router.patch(
    "/submissions/{submission_id}",
    summary="Hide, disqualify or mark a submission as a baseline",
    responses=errors(404),
)
def moderate_submission(db: DbSession, submission_id: IdPath, body: SubmissionUpdate) -> SubmissionAdminRead:
    submission = service.get_submission(db, submission_id=submission_id)
    service.moderate_submission(
        db,
        submission=submission,
        is_hidden=body.is_hidden,
        is_disqualified=body.is_disqualified,
        is_baseline=body.is_baseline,
    )
    return service.admin_view(submission)


@router.post(
    "/submissions/{submission_id}/requeue",
    summary="Queue the submission's evaluation again (current evaluation version)",
    description=(
        "The current result stays on the leaderboard until the new run's result replaces it; a run that fails "
        "leaves it in place. `discard_result=true` removes it at once instead."
    ),
    responses=errors(404, 409),
)
def requeue_submission(
    db: DbSession,
    submission_id: IdPath,
    discard_result: Annotated[bool, Query(description="Remove the current result now.")] = False,
) -> SubmissionAdminRead:
    submission = service.get_submission(db, submission_id=submission_id)
    service.requeue_submission(db, submission=submission, discard_result=discard_result)
    db.refresh(submission, ["evaluations"])
    return service.admin_view(submission)


@router.post(
    "/submissions/{submission_id}/cancel",
    summary="Cancel a queued or running evaluation",
    responses=errors(404, 409),
)
def cancel_submission(db: DbSession, submission_id: IdPath) -> SubmissionAdminRead:
    submission = service.get_submission(db, submission_id=submission_id)
    service.cancel_submission(db, submission=submission)
    return service.admin_view(submission)
