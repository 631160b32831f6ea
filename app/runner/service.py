"""The job protocol of GPU hosts, server side: what a runner token may do to one evaluation, and nothing more.

A GPU host holds a runner token (scope `runner`) and no database URL, storage credentials or ground truth.
For each `evaluation.run` message it takes from its gpu queue it:

    claim    -> a lease through app.lifecycle, and a job key shown once (only its hash is kept, in the lease
                owner `runner/<token id>/<host>/<key hash>`)
    renew    -> extends the lease (and records progress) while participant code runs
    manifest -> the job's inputs only: the submission file, its model tarball if any, and the test set's input
                files (manifest.json and images) by SHA-256; never a ground-truth file, never a server path
    fetch    -> one of those inputs by SHA-256 (through the API, or a presigned URL of the S3 store)
    upload   -> predictions, features and log tails into the attempt's upload directory
    finish   -> the lease passes to the scoring step (`scoring/<id>/<attempt>`) and `evaluation.score_upload`
                is sent to the cpu queue, which alone reads ground truth
    failure  -> a participant failure (the run's one line), or an infrastructure one (retried elsewhere)

Every call after the claim names the evaluation and attempt and carries the job key: it is refused unless the
row is running under that attempt with a lease owned by this token and key. A host whose lease expired, or
that was given another job's ids, lands nothing; a second finish of the same attempt finds the lease already
passed on. Each function works in the caller's session and never commits. Must not import FastAPI.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app import lifecycle
from app.admin.content import input_manifest
from app.errors import Conflict, InvalidInput, NotFound
from app.queue import enqueue_after_commit
from app.scoring import canonical_options
from app.settings import Settings
from app.storage import runner_upload_dir
from app.tables import ApiToken, Evaluation, EvaluationStatus, Phase, Submission
from app.tables import TestSet as TestSetRow
from worker.vocabulary import CPU_QUEUE, DEFAULT_GPU_CLASS, RUN, SCORE_UPLOAD, SubmissionKind, queue_for

RUNNER_OWNER_PREFIX = "runner/"
_HOST = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,99}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def scoring_owner(evaluation_id: int, attempt: int) -> str:
    """The lease owner while an uploaded run waits for (or is in) its scoring step on the cpu queue."""
    return f"{lifecycle.SCORING_OWNER_PREFIX}{evaluation_id}/{attempt}"


def _key_hash(job_key: str) -> str:
    return hashlib.sha256(job_key.encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True)
class ClaimedJob:
    claimed: bool
    outcome: str
    attempt: int = 0
    job_key: str = ""


def claim_job(
    session: Session,
    *,
    token: ApiToken,
    evaluation_id: int,
    host: str,
    settings: Settings,
    gpu_classes: Sequence[str] = (DEFAULT_GPU_CLASS,),
) -> ClaimedJob:
    """Take the evaluation for one run on the GPU host `host`; `claimed` False says why not (finished, held...).

    Refused (Conflict) for a job of a phase whose GPU class is not among `gpu_classes`, the classes the host
    serves: the job stays queued for a host of its class (the reconciler re-sends it to its class's queue)."""
    if not _HOST.fullmatch(host):
        raise InvalidInput("host: 1 to 100 letters, digits, '.', '_', ':', '@' or '-', starting with a letter or digit")
    submission = session.scalar(
        select(Submission)
        .join(Evaluation, Evaluation.submission_id == Submission.id)
        .where(Evaluation.id == evaluation_id)
    )
    if submission is None:
        raise NotFound(f"no evaluation {evaluation_id}")
    if submission.kind == SubmissionKind.PREDICTIONS:
        raise Conflict(f"evaluation {evaluation_id} scores a predictions file: it runs on the control host, not here")
    wanted = submission.phase.gpu_class
    if wanted not in gpu_classes:
        raise Conflict(
            f"evaluation {evaluation_id} needs GPU class {wanted!r}; this host serves {', '.join(gpu_classes)}"
        )
    job_key = secrets.token_urlsafe(32)
    owner = f"{RUNNER_OWNER_PREFIX}{token.id}/{host}/{_key_hash(job_key)}"
    claim = lifecycle.claim(
        session,
        evaluation_id=evaluation_id,
        owner=owner,
        lease_s=settings.lease_expiry_s,
        max_attempts=settings.max_attempts,
    )
    if not claim.claimed:
        return ClaimedJob(False, str(claim.outcome))
    return ClaimedJob(True, str(claim.outcome), claim.attempt, job_key)


def held_job(session: Session, *, token: ApiToken, evaluation_id: int, attempt: int, job_key: str) -> Evaluation:
    """The evaluation, if this token and job key hold its lease for `attempt`; else Conflict (409): the host
    stops the run and lands nothing."""
    row = session.get(Evaluation, evaluation_id, populate_existing=True)
    if row is None:
        raise NotFound(f"no evaluation {evaluation_id}")
    owner = row.lease_owner or ""
    holds = (
        row.status is EvaluationStatus.RUNNING
        and row.attempt == attempt
        and owner.startswith(f"{RUNNER_OWNER_PREFIX}{token.id}/")
        and bool(job_key)
        and secrets.compare_digest(owner.rsplit("/", 1)[-1], _key_hash(job_key))
    )
    if not holds:
        raise Conflict(f"evaluation {evaluation_id} attempt {attempt}: this job no longer holds the lease")
    return row


def renew(session: Session, *, row: Evaluation, settings: Settings, progress: float | None, message: str) -> None:
    """Extend the held lease (and record progress); Conflict when it was lost meanwhile."""
    owner = row.lease_owner or ""
    renewed = lifecycle.renew_lease(
        session,
        evaluation_id=row.id,
        owner=owner,
        attempt=row.attempt,
        new_owner=owner,
        lease_s=settings.lease_expiry_s,
    )
    if not renewed:
        raise Conflict(f"evaluation {row.id} attempt {row.attempt}: the lease was lost")
    if progress is not None:
        lifecycle.report_progress(
            session, evaluation_id=row.id, owner=owner, attempt=row.attempt, progress=progress, message=message
        )


def _context(session: Session, row: Evaluation) -> tuple[Submission, Phase, TestSetRow]:
    submission = row.submission
    phase = submission.phase
    if phase.test_set_id is None:
        raise Conflict(f"phase {phase.id} has no test set")
    test_set = session.get(TestSetRow, phase.test_set_id)
    assert test_set is not None
    return submission, phase, test_set


def _file(name: str, sha256: str | None, size: int | None) -> dict[str, Any]:
    return {"name": Path(name).name, "sha256": sha256, "size": size}


def manifest(session: Session, *, row: Evaluation, settings: Settings) -> dict[str, Any]:
    """What the host needs to run the job: the run's parameters and its inputs by SHA-256 (no ground truth).

    With the S3 object store, each test-set input already stored there by content carries a presigned GET URL
    (`url`, living `presigned_url_ttl_s`); the others are fetched through the API.
    """
    submission, phase, test_set = _context(session, row)
    options = canonical_options(phase.scoring_options)
    files = input_manifest(session, test_set.id)["files"]
    if not any(f["path"] == "manifest.json" for f in files):
        raise Conflict(f"test set {test_set.name!r} has no content records; register it again to run it on GPU hosts")
    entries = [{"path": f["path"], "sha256": f["sha256"], "size": f["size"]} for f in files]
    if settings.object_store == "s3":
        _presign(settings, files, entries)
    model = None
    if submission.model_path:
        name = submission.model_filename or submission.model_path
        model = _file(name, submission.model_sha256, submission.model_size_bytes)
    return {
        "evaluation_id": row.id,
        "attempt": row.attempt,
        "kind": str(submission.kind),
        "task": str(options["task"]),
        "rules": str(options["rules"]),
        "timeout_s": min(float(phase.time_limit_s), settings.sandbox_timeout_s),
        "hidden": bool(options["hidden"]),
        "input_layout": str(options["input_layout"]) if options["input_layout"] else None,
        "memory_bytes": int(phase.memory_limit_mb) * 1024**2,
        "run_mode": str(submission.run_mode or phase.run_mode),
        "show_logs": bool(phase.show_logs),
        "submission": _file(submission.file_path, submission.sha256, int(submission.size_bytes)),
        "model_archive": model,
        "test_set": {
            "id": test_set.id,
            "name": test_set.name,
            "files": entries,
            "bytes": sum(f["size"] for f in files),
        },
        "lease_s": settings.lease_expiry_s,
        "heartbeat_s": settings.lease_heartbeat_s,
    }


def _presign(settings: Settings, files: list[dict[str, Any]], entries: list[dict[str, Any]]) -> None:
    from app.object_store import object_store
    from worker.objects import ObjectStoreError

    store = object_store(settings)
    for source, entry in zip(files, entries, strict=True):
        try:
            found = store.info(source["object"])
            if found is not None and found.sha256 == source["sha256"]:
                entry["url"] = store.presigned_get(source["object"], expires_s=settings.presigned_url_ttl_s)
        except ObjectStoreError:
            continue  # the store is away: the API serves the file instead


def input_path(session: Session, *, row: Evaluation, settings: Settings, sha256: str) -> Path:
    """The control host's file of one of the job's inputs, by SHA-256; NotFound for anything else (a
    ground-truth file, another job's submission), whatever its hash."""
    if not _SHA256.fullmatch(sha256):
        raise InvalidInput("sha256: 64 lower-case hexadecimal digits")
    submission, _phase, test_set = _context(session, row)
    if submission.sha256 == sha256:
        return settings.storage_path / submission.file_path
    if submission.model_path and submission.model_sha256 == sha256:
        return settings.storage_path / submission.model_path
    root = Path(test_set.manifest_path).parent.resolve()
    for item in input_manifest(session, test_set.id)["files"]:
        if item["sha256"] == sha256:
            path = (root / str(item["path"])).resolve()
            if path.is_relative_to(root):
                return path
    raise NotFound(f"{sha256} is not an input of evaluation {row.id}")


def upload_dir(settings: Settings, row: Evaluation) -> Path:
    directory = runner_upload_dir(settings.data_dir, row.id, row.attempt)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def finish(session: Session, *, row: Evaluation, settings: Settings) -> None:
    """The run's predictions are uploaded: pass the lease to the scoring step and send it to the cpu queue."""
    directory = runner_upload_dir(settings.data_dir, row.id, row.attempt)
    if not (directory / "predictions.json").is_file():
        raise Conflict(f"evaluation {row.id} attempt {row.attempt}: upload the predictions before finishing")
    passed = lifecycle.renew_lease(
        session,
        evaluation_id=row.id,
        owner=row.lease_owner or "",
        attempt=row.attempt,
        new_owner=scoring_owner(row.id, row.attempt),
        lease_s=settings.lease_expiry_s,
    )
    if not passed:
        raise Conflict(f"evaluation {row.id} attempt {row.attempt}: the lease was lost")
    lifecycle.report_progress(
        session,
        evaluation_id=row.id,
        owner=scoring_owner(row.id, row.attempt),
        attempt=row.attempt,
        progress=0.8,
        message="waiting for scoring",
    )
    enqueue_after_commit(session, SCORE_UPLOAD, queue=CPU_QUEUE, evaluation_id=row.id, attempt=row.attempt)


def report_failure(
    session: Session, *, row: Evaluation, settings: Settings, kind: str, message: str, detail: str
) -> str:
    """`participant`: the run ends failed with `message` (the submission's fault, one line); `infrastructure`:
    the host could not run it (retried on any host, failed at the attempt cap, never the team's quota)."""
    owner = row.lease_owner or ""
    if kind == "participant":
        lifecycle.fail(session, evaluation_id=row.id, owner=owner, attempt=row.attempt, message=message, detail=detail)
        return "failed"
    status = lifecycle.release_for_retry(
        session,
        evaluation_id=row.id,
        owner=owner,
        attempt=row.attempt,
        max_attempts=settings.max_attempts,
        detail=f"reported by GPU host {owner.split('/')[2] if owner.count('/') >= 3 else owner}: {detail}",
    )
    if status is EvaluationStatus.RETRYING:
        queue = queue_for(str(row.submission.kind), row.submission.phase.gpu_class)
        enqueue_after_commit(session, RUN, queue=queue, evaluation_id=row.id)
    return str(status)
