"""The evaluation state machine on the database row, with a lease-based claim and idempotent result writes.

    queued -> running -> succeeded | failed | cancelled
    running -> retrying -> running          (infrastructure errors, lost workers; capped by max_attempts)

Every transition is a compare-and-set: an UPDATE whose WHERE clause repeats what the caller observed
(status, attempt, lease owner), so of two deliveries of one message exactly one wins the claim, and a worker
whose lease was taken over can no longer write. `attempt` grows on every claim, which makes
(id, attempt) the identity of one run. Results are unique per (submission, evaluation version); only the run
holding the lease writes one, replacing the result of an earlier run of the same evaluation (a requeue) in
the same transaction that finishes the row.

Each function works inside the caller's session and never commits (one short transaction per task step).
Imports SQLAlchemy and app.models; must not import Celery, FastAPI or torch.
"""

from __future__ import annotations

import enum
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app.models import Evaluation, EvaluationStatus, Result, Submission, utcnow

GENERIC_FAILURE = "the evaluation failed because of an internal error; the organisers have been notified"
CRASH_LOOP_FAILURE = "the evaluation stopped its worker repeatedly and was abandoned"


class ClaimOutcome(enum.StrEnum):
    CLAIMED = "claimed"
    FINISHED = "finished"  # already succeeded, failed or cancelled
    HELD = "held"  # a live run holds the lease
    EXHAUSTED = "exhausted"  # attempt cap reached: now failed
    MISSING = "missing"


@dataclass(frozen=True)
class Claim:
    outcome: ClaimOutcome
    evaluation_id: int
    attempt: int = 0
    owner: str = ""

    @property
    def claimed(self) -> bool:
        return self.outcome is ClaimOutcome.CLAIMED


def owner_is_dead(owner: str | None) -> bool:
    """True when `owner` (`host:pid`) names a process of this host that no longer exists."""
    if not owner:
        return False
    host, _, pid_text = owner.rpartition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _lease_is_stale(row: Evaluation, now: datetime) -> bool:
    expired = row.lease_expires_at is None or row.lease_expires_at <= now
    return expired or owner_is_dead(row.lease_owner)


def _observed(row: Evaluation) -> Any:
    """The WHERE clause of a compare-and-set against the row as the caller saw it."""
    owner = Evaluation.lease_owner.is_(None) if row.lease_owner is None else Evaluation.lease_owner == row.lease_owner
    return and_(
        Evaluation.id == row.id,
        Evaluation.status == row.status,
        Evaluation.attempt == row.attempt,
        owner,
    )


def claim(
    session: Session,
    *,
    evaluation_id: int,
    owner: str,
    lease_s: float,
    max_attempts: int,
    now: datetime | None = None,
) -> Claim:
    """Take the row for one run: queued/retrying rows, or running rows whose lease is stale."""
    now = now or utcnow()
    row = session.get(Evaluation, evaluation_id, populate_existing=True)
    if row is None:
        return Claim(ClaimOutcome.MISSING, evaluation_id)
    if row.status.is_terminal:
        return Claim(ClaimOutcome.FINISHED, evaluation_id, row.attempt)
    if row.status is EvaluationStatus.RUNNING and not _lease_is_stale(row, now):
        return Claim(ClaimOutcome.HELD, evaluation_id, row.attempt, row.lease_owner or "")
    if row.attempt >= max_attempts:
        failed = _release(
            session,
            _observed(row),
            status=EvaluationStatus.FAILED,
            finished_at=now,
            infrastructure_failure=True,
            error_message=CRASH_LOOP_FAILURE,
            error_detail=f"attempt cap {max_attempts} reached; last lease owner {row.lease_owner}",
        )
        outcome = ClaimOutcome.EXHAUSTED if failed else ClaimOutcome.HELD
        return Claim(outcome, evaluation_id, row.attempt)
    attempt = row.attempt + 1
    taken = session.execute(
        update(Evaluation)
        .where(_observed(row))
        .values(
            status=EvaluationStatus.RUNNING,
            attempt=attempt,
            lease_owner=owner,
            lease_expires_at=now + timedelta(seconds=lease_s),
            started_at=now,
            finished_at=None,
            progress=0.0,
            progress_message="started",
        )
    )
    if _rowcount(taken) != 1:
        return Claim(ClaimOutcome.HELD, evaluation_id, row.attempt)
    return Claim(ClaimOutcome.CLAIMED, evaluation_id, attempt, owner)


def _rowcount(result: Any) -> int:
    return int(result.rowcount)


def _release(session: Session, condition: Any, *, status: EvaluationStatus, **values: Any) -> bool:
    """Moves the row matching `condition` to `status` and drops its lease; False when no row matched."""
    done = session.execute(
        update(Evaluation).where(condition).values(status=status, lease_owner=None, lease_expires_at=None, **values)
    )
    return _rowcount(done) == 1


def _holds(evaluation_id: int, owner: str, attempt: int) -> Any:
    return and_(
        Evaluation.id == evaluation_id,
        Evaluation.status == EvaluationStatus.RUNNING,
        Evaluation.lease_owner == owner,
        Evaluation.attempt == attempt,
    )


def report_progress(
    session: Session, *, evaluation_id: int, owner: str, attempt: int, progress: float, message: str
) -> bool:
    """Record progress for the API to stream; False when this run no longer holds the lease."""
    done = session.execute(
        update(Evaluation)
        .where(_holds(evaluation_id, owner, attempt))
        .values(progress=max(0.0, min(1.0, progress)), progress_message=message[:500])
    )
    return _rowcount(done) == 1


def renew_lease(
    session: Session,
    *,
    evaluation_id: int,
    owner: str,
    attempt: int,
    new_owner: str,
    lease_s: float,
    now: datetime | None = None,
) -> bool:
    """Extend the lease of a held run (optionally handing it to `new_owner`); False when it was lost."""
    now = now or utcnow()
    done = session.execute(
        update(Evaluation)
        .where(_holds(evaluation_id, owner, attempt))
        .values(lease_owner=new_owner, lease_expires_at=now + timedelta(seconds=lease_s))
    )
    return _rowcount(done) == 1


def still_holds(session: Session, *, evaluation_id: int, owner: str, attempt: int) -> bool:
    found = session.execute(select(Evaluation.id).where(_holds(evaluation_id, owner, attempt))).first()
    return found is not None


def succeed(
    session: Session,
    *,
    evaluation_id: int,
    owner: str,
    attempt: int,
    scores: dict[str, Any],
    gpu_seconds: float = 0.0,
    now: datetime | None = None,
) -> bool:
    """Store the result (one per submission and evaluation version) and finish the run.

    A result already stored for this evaluation (a requeued run) is replaced in the same transaction, so the
    board shows the old result until the new one lands. False when the lease was lost: nothing is written,
    the run that holds the row will write instead.
    """
    now = now or utcnow()
    succeeded = _release(
        session,
        _holds(evaluation_id, owner, attempt),
        status=EvaluationStatus.SUCCEEDED,
        finished_at=now,
        progress=1.0,
        progress_message="done",
        error_message="",
        error_detail="",
        gpu_seconds=gpu_seconds,
    )
    if not succeeded:
        return False
    submission_id, version = session.execute(
        select(Evaluation.submission_id, Evaluation.version).where(Evaluation.id == evaluation_id)
    ).one()
    values = {
        "evaluation_id": evaluation_id,
        "submission_id": submission_id,
        "evaluation_version": version,
        "created_at": now,
        **scores,
    }
    dialect = session.get_bind().dialect.name
    insert_fn = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert_fn(Result).values(values)
    replaced = {key: statement.excluded[key] for key in values if key not in ("submission_id", "evaluation_version")}
    session.execute(
        statement.on_conflict_do_update(index_elements=["submission_id", "evaluation_version"], set_=replaced)
    )
    return True


def fail(
    session: Session,
    *,
    evaluation_id: int,
    owner: str,
    attempt: int,
    message: str,
    detail: str = "",
    infrastructure: bool = False,
    now: datetime | None = None,
) -> bool:
    """End the run `failed` with a one-line participant message and an organiser-only detail.

    `infrastructure`: the platform failed, not the submission; such a failure costs the team no quota.
    """
    now = now or utcnow()
    return _release(
        session,
        _holds(evaluation_id, owner, attempt),
        status=EvaluationStatus.FAILED,
        finished_at=now,
        error_message=message.splitlines()[0][:500] if message else GENERIC_FAILURE,
        error_detail=detail,
        infrastructure_failure=infrastructure,
    )


def release_for_retry(
    session: Session,
    *,
    evaluation_id: int,
    owner: str,
    attempt: int,
    max_attempts: int,
    detail: str,
    now: datetime | None = None,
) -> EvaluationStatus | None:
    """After an infrastructure error: `retrying` (another run will come) or `failed` at the attempt cap."""
    now = now or utcnow()
    final = attempt >= max_attempts
    status = EvaluationStatus.FAILED if final else EvaluationStatus.RETRYING
    released = _release(
        session,
        _holds(evaluation_id, owner, attempt),
        status=status,
        finished_at=now if final else None,
        queued_at=now,
        infrastructure_failure=final,
        error_message=GENERIC_FAILURE if final else "",
        error_detail=detail,
        progress_message="waiting to retry" if not final else "failed",
    )
    return status if released else None


@dataclass(frozen=True)
class Pending:
    evaluation_id: int
    kind: str


SHARDED_OWNER_PREFIX = "shards/"


def renew_waiting_shards(
    session: Session, *, evaluation_ids: Sequence[int], lease_s: float, now: datetime | None = None
) -> list[int]:
    """Extend the leases of sharded runs that still have shards waiting in the broker (`evaluation_ids`):
    a shard renews its run's lease only while it runs, and a long GPU queue must not expire the run meanwhile.
    Returns the ids renewed."""
    if not evaluation_ids:
        return []
    now = now or utcnow()
    renewed = session.execute(
        update(Evaluation)
        .where(
            Evaluation.id.in_(list(evaluation_ids)),
            Evaluation.status == EvaluationStatus.RUNNING,
            Evaluation.lease_owner.startswith(SHARDED_OWNER_PREFIX),
        )
        .values(lease_expires_at=now + timedelta(seconds=lease_s))
        .returning(Evaluation.id)
    )
    return sorted(int(i) for i in renewed.scalars())


def expire_stale_leases(session: Session, *, max_attempts: int, now: datetime | None = None) -> list[int]:
    """Running rows whose lease expired (or whose owner on this host died) -> retrying; failed at the cap."""
    now = now or utcnow()
    rows = session.scalars(
        select(Evaluation).where(Evaluation.status == EvaluationStatus.RUNNING).with_for_update(skip_locked=True)
    ).all()
    released: list[int] = []
    for row in rows:
        if not _lease_is_stale(row, now):
            continue
        final = row.attempt >= max_attempts
        expired = _release(
            session,
            _observed(row),
            status=EvaluationStatus.FAILED if final else EvaluationStatus.RETRYING,
            finished_at=now if final else None,
            queued_at=now,
            infrastructure_failure=final,
            error_message=CRASH_LOOP_FAILURE if final else "",
            error_detail=f"lease of {row.lease_owner} expired during attempt {row.attempt}",
        )
        if expired and not final:
            released.append(row.id)
    return released


def waiting(session: Session, *, queued_before: datetime, exclude: Sequence[int] = ()) -> list[Pending]:
    """Rows waiting for a run (queued or retrying) since before `queued_before`, oldest first."""
    query = (
        select(Evaluation.id, Submission.kind)
        .join(Submission, Submission.id == Evaluation.submission_id)
        .where(
            or_(Evaluation.status == EvaluationStatus.QUEUED, Evaluation.status == EvaluationStatus.RETRYING),
            Evaluation.queued_at <= queued_before,
        )
        .order_by(Evaluation.queued_at, Evaluation.id)
    )
    if exclude:
        query = query.where(Evaluation.id.not_in(list(exclude)))
    return [Pending(evaluation_id, str(kind)) for evaluation_id, kind in session.execute(query)]


def mark_requeued(session: Session, *, evaluation_ids: Sequence[int], now: datetime | None = None) -> None:
    """Restart the waiting clock of re-sent rows so one reconciler pass does not resend them next time."""
    if evaluation_ids:
        session.execute(
            update(Evaluation)
            .where(
                Evaluation.id.in_(list(evaluation_ids)),
                or_(
                    Evaluation.status == EvaluationStatus.QUEUED,
                    Evaluation.status == EvaluationStatus.RETRYING,
                ),
            )
            .values(queued_at=now or utcnow())
        )
