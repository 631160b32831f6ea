"""The lifecycle of an evaluation: the one module that writes its status and its timestamps.

    create -> queued -> (claim) running -> succeeded | failed | cancelled
    running -> retrying -> running           (infrastructure errors, lost workers; capped by max_attempts)
    succeeded | failed | cancelled -> queued (requeue by the organisers)
    queued | running | retrying -> cancelled (cancel, with who asked and why)
    a phase's re-evaluation creates one queued evaluation per submission under its new version

The API services (submissions, admin, challenges) and the worker's tasks ask this module for every transition;
none of them assigns a status (tests/test_one_status_writer.py). Transitions that change what a leaderboard
shows (a result landing or discarded, a submission or team disqualified, hidden or made a baseline, a phase's
ranking rules changed, a re-evaluation) ask for that phase's board to be rebuilt after commit
(`app.leaderboard.rebuilds.request_rebuild`): the rebuild is a queued task, never done here.

The worker's transitions are compare-and-set: an UPDATE whose WHERE clause repeats what the caller observed
(status, attempt, lease owner), so of two deliveries of one message exactly one wins the claim, and a worker
whose lease was taken over can no longer write. `attempt` grows on every claim, which makes (id, attempt) the
identity of one run. Results are unique per (submission, evaluation version); only the run holding the lease
writes one, replacing the result of an earlier run of the same evaluation (a requeue) in the same transaction
that finishes the row.

Each function works inside the caller's session and never commits (one short transaction per request or task
step); messages are sent after commit (app.queue). Imports SQLAlchemy, app.tables, app.queue and
app.leaderboard.rebuilds; must not import Celery, FastAPI or torch (the worker and the API both use it).
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

from app.errors import Conflict
from app.leaderboard.rebuilds import request_rebuild
from app.queue import enqueue_after_commit
from app.tables import (
    ACTIVE_STATUSES,
    Evaluation,
    EvaluationStatus,
    Phase,
    Result,
    Submission,
    Team,
    utcnow,
)
from worker.vocabulary import DEFAULT_GPU_CLASS, RUN, queue_for

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
    submission_id, version, phase_id = session.execute(
        select(Evaluation.submission_id, Evaluation.version, Submission.phase_id)
        .join(Submission, Submission.id == Evaluation.submission_id)
        .where(Evaluation.id == evaluation_id)
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
    request_rebuild(session, [phase_id])  # a result landed
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
    gpu_class: str = DEFAULT_GPU_CLASS


SHARDED_OWNER_PREFIX = "shards/"
# A GPU host's uploaded run waiting for (or in) its scoring step on the cpu queue (app.runner.service).
SCORING_OWNER_PREFIX = "scoring/"


def renew_waiting_shards(
    session: Session, *, evaluation_ids: Sequence[int], lease_s: float, now: datetime | None = None
) -> list[int]:
    """Extend the leases of runs whose next step still waits in the broker (`evaluation_ids`): sharded runs
    (a shard renews its run's lease only while it runs, and a long GPU queue must not expire the run
    meanwhile) and uploaded runs waiting for scoring on the cpu queue. Returns the ids renewed."""
    if not evaluation_ids:
        return []
    now = now or utcnow()
    renewed = session.execute(
        update(Evaluation)
        .where(
            Evaluation.id.in_(list(evaluation_ids)),
            Evaluation.status == EvaluationStatus.RUNNING,
            or_(
                Evaluation.lease_owner.startswith(SHARDED_OWNER_PREFIX),
                Evaluation.lease_owner.startswith(SCORING_OWNER_PREFIX),
            ),
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
        select(Evaluation.id, Submission.kind, Phase.gpu_class)
        .join(Submission, Submission.id == Evaluation.submission_id)
        .join(Phase, Phase.id == Submission.phase_id)
        .where(
            or_(Evaluation.status == EvaluationStatus.QUEUED, Evaluation.status == EvaluationStatus.RETRYING),
            Evaluation.queued_at <= queued_before,
        )
        .order_by(Evaluation.queued_at, Evaluation.id)
    )
    if exclude:
        query = query.where(Evaluation.id.not_in(list(exclude)))
    return [Pending(int(row[0]), str(row[1]), str(row[2])) for row in session.execute(query)]


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


# The API's transitions: queueing, cancelling, requeueing, re-evaluating, moderating.


def _run_queue(submission: Submission) -> str:
    """The queue of the submission's runs: by its kind and its phase's GPU class (worker.vocabulary)."""
    return queue_for(submission.kind, submission.phase.gpu_class)


def create(session: Session, *, submission: Submission, version: int) -> Evaluation:
    """A new queued evaluation of `submission` under evaluation `version`, sent to its queue after commit."""
    evaluation = Evaluation(
        submission_id=submission.id, version=version, status=EvaluationStatus.QUEUED, queued_at=utcnow()
    )
    session.add(evaluation)
    session.flush()
    enqueue_after_commit(session, RUN, queue=_run_queue(submission), evaluation_id=evaluation.id)
    return evaluation


class CancelReason(enum.StrEnum):
    """Who withdrew the evaluation; the team may withdraw only one that has not started."""

    TEAM = "cancelled by the team"
    ORGANISERS = "cancelled by the organisers"


def cancel(session: Session, *, evaluation: Evaluation | None, reason: CancelReason) -> Evaluation:
    """End a waiting (or, for the organisers, running) evaluation `cancelled`; its lease is dropped, so a run
    still going notices at its next lease renewal and stops (worker.lease)."""
    if reason is CancelReason.TEAM:
        if evaluation is None or evaluation.status is not EvaluationStatus.QUEUED:
            state = evaluation.status.value if evaluation is not None else "none"
            raise Conflict("only a queued evaluation can be cancelled; this one is " + state)
    elif evaluation is None or evaluation.status not in ACTIVE_STATUSES:
        raise Conflict("nothing to cancel: no queued or running evaluation")
    evaluation.status = EvaluationStatus.CANCELLED
    evaluation.finished_at = utcnow()
    evaluation.lease_owner = None
    evaluation.lease_expires_at = None
    evaluation.error_message = reason.value
    session.flush()
    return evaluation


def requeue(session: Session, *, submission: Submission, discard_result: bool = False) -> Evaluation:
    """Put the submission's evaluation of the phase's current version back to `queued` (a fresh run).

    Its result stays (and stays on the board) until the new run's result replaces it, unless `discard_result`
    (then the board is rebuilt without it).
    """
    version = submission.phase.evaluation_version
    ev = next((e for e in submission.evaluations if e.version == version), None)
    if ev is None:
        return create(session, submission=submission, version=version)
    if ev.status in ACTIVE_STATUSES:
        raise Conflict(f"evaluation {ev.id} is {ev.status.value}; cancel it first")
    if discard_result and ev.result is not None:
        stale, ev.result = ev.result, None
        session.delete(stale)
        session.flush()
        request_rebuild(session, [submission.phase_id])
    ev.status = EvaluationStatus.QUEUED
    ev.attempt = 0
    ev.lease_owner = None
    ev.lease_expires_at = None
    ev.queued_at = utcnow()
    ev.started_at = None
    ev.finished_at = None
    ev.progress = 0.0
    ev.progress_message = ""
    ev.error_message = ""
    ev.error_detail = ""
    ev.infrastructure_failure = False
    session.flush()
    enqueue_after_commit(session, RUN, queue=_run_queue(submission), evaluation_id=ev.id)
    return ev


def reevaluate(session: Session, *, phase: Phase, fingerprint: str | None) -> list[Evaluation]:
    """A new evaluation version of the phase (scored with `fingerprint`): one queued evaluation per submission
    not disqualified. Old results are kept, off the board, which is rebuilt empty until new ones land."""
    phase.scoring_fingerprint = fingerprint
    phase.evaluation_version += 1
    submissions = session.scalars(
        select(Submission).where(Submission.phase_id == phase.id, Submission.is_disqualified.is_(False))
    ).all()
    created = [create(session, submission=s, version=phase.evaluation_version) for s in submissions]
    request_rebuild(session, [phase.id])
    return created


def moderate(
    session: Session,
    *,
    submission: Submission,
    is_hidden: bool | None = None,
    is_disqualified: bool | None = None,
    is_baseline: bool | None = None,
) -> Submission:
    """Hide, disqualify or mark as baseline one submission (None leaves a flag as it is); its board follows."""
    changed = False
    for name, value in (("is_hidden", is_hidden), ("is_disqualified", is_disqualified), ("is_baseline", is_baseline)):
        if value is not None and getattr(submission, name) != value:
            setattr(submission, name, value)
            changed = True
    session.flush()
    if changed:
        request_rebuild(session, [submission.phase_id])
    return submission


def disqualify_team(session: Session, *, team: Team, disqualified: bool) -> Team:
    """Disqualify a team (or lift it): every board the team has a submission on is rebuilt."""
    if team.is_disqualified != disqualified:
        team.is_disqualified = disqualified
        session.flush()
        phases = session.scalars(select(Submission.phase_id).where(Submission.team_id == team.id).distinct())
        request_rebuild(session, list(phases))
    return team


# What a phase's board depends on besides its results: a change of any of these is a new board.
BOARD_FIELDS = (
    "entry_policy",
    "ranking_metric",
    "evaluation_version",
    "shown_groups",
    "seen_groups",
    "scoring_options",
    "scoring_fingerprint",
)


def phase_rules_changed(session: Session, *, phase: Phase, changed: set[str]) -> None:
    """After the organisers changed `changed` fields of a phase: rebuild its board if any is a board field."""
    if changed & set(BOARD_FIELDS):
        request_rebuild(session, [phase.id])
