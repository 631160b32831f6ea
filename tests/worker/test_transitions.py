"""The evaluation state machine on PostgreSQL and SQLite: claims, leases, the attempt cap, idempotent writes."""

from __future__ import annotations

import socket
import subprocess
import sys
import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app import lifecycle as transitions
from app.lifecycle import ClaimOutcome
from app.tables import Challenge, Evaluation, EvaluationStatus, Phase, Result, Submission, SubmissionKind, Team, utcnow

LEASE_S = 30.0
SCORES: dict[str, Any] = {
    "tp": 3,
    "fp": 1,
    "fn": 2,
    "precision": 0.75,
    "recall": 0.6,
    "f1": 2 / 3,
    "ap": 0.5,
    "f1_ci_low": None,
    "f1_ci_high": None,
    "groups": {"Scanner A": {"tp": 3}},
    "cases": {"001.tiff": {"tp": 3, "fp": 1, "fn": 2}},
}


def _evaluation(session: Session, **values: Any) -> Evaluation:
    tag = uuid.uuid4().hex[:8]
    phase = Phase(challenge=Challenge(slug=f"c-{tag}", title="C"), slug="p", title="P")
    submission = Submission(
        phase=phase,
        team=Team(name=f"t-{tag}", contact_email="t@example.org"),
        kind=SubmissionKind.PREDICTIONS,
        file_path="x.json",
        sha256="0" * 64,
        size_bytes=1,
    )
    evaluation = Evaluation(submission=submission, version=1, **values)
    session.add(evaluation)
    session.commit()
    return evaluation


def _claim(session: Session, evaluation_id: int, owner: str, **kwargs: Any) -> transitions.Claim:
    kwargs.setdefault("lease_s", LEASE_S)
    kwargs.setdefault("max_attempts", 3)
    return transitions.claim(session, evaluation_id=evaluation_id, owner=owner, **kwargs)


def _row(session: Session, evaluation_id: int) -> Evaluation:
    session.expire_all()
    row = session.get(Evaluation, evaluation_id)
    assert row is not None
    return row


def _results(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(Result)) or 0)


def test_a_queued_row_is_claimed_once_with_a_lease(db_session: Session) -> None:
    ev = _evaluation(db_session)
    now = utcnow()
    first = _claim(db_session, ev.id, "host-a:1", now=now)
    second = _claim(db_session, ev.id, "host-b:2", now=now + timedelta(seconds=1))

    assert first.outcome is ClaimOutcome.CLAIMED
    assert first.attempt == 1
    assert second.outcome is ClaimOutcome.HELD
    row = _row(db_session, ev.id)
    assert row.status is EvaluationStatus.RUNNING
    assert row.attempt == 1
    assert row.lease_owner == "host-a:1"
    assert row.lease_expires_at == now + timedelta(seconds=LEASE_S)


def test_an_expired_lease_is_taken_over_and_the_old_run_can_no_longer_write(db_session: Session) -> None:
    ev = _evaluation(db_session)
    now = utcnow()
    old = _claim(db_session, ev.id, "host-a:1", now=now)
    new = _claim(db_session, ev.id, "host-b:2", now=now + timedelta(seconds=LEASE_S + 1))

    assert new.outcome is ClaimOutcome.CLAIMED
    assert new.attempt == 2
    assert not transitions.succeed(db_session, evaluation_id=ev.id, owner=old.owner, attempt=old.attempt, scores=SCORES)
    assert not transitions.report_progress(
        db_session, evaluation_id=ev.id, owner=old.owner, attempt=old.attempt, progress=0.5, message="x"
    )
    assert _results(db_session) == 0
    assert transitions.succeed(db_session, evaluation_id=ev.id, owner=new.owner, attempt=new.attempt, scores=SCORES)
    row = _row(db_session, ev.id)
    assert row.status is EvaluationStatus.SUCCEEDED
    assert row.lease_owner is None
    assert _results(db_session) == 1


def test_a_lease_held_by_a_dead_process_of_this_host_is_taken_over_at_once(db_session: Session) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_owner = f"{socket.gethostname()}:{int(gone.stdout)}"
    live_owner = f"{socket.gethostname()}:1"  # init: alive
    ev = _evaluation(db_session)
    _claim(db_session, ev.id, dead_owner)
    assert transitions.owner_is_dead(dead_owner)
    assert not transitions.owner_is_dead(live_owner)
    assert not transitions.owner_is_dead("another-host:1")

    taken = _claim(db_session, ev.id, "host-b:2")
    assert taken.outcome is ClaimOutcome.CLAIMED
    assert taken.attempt == 2


def test_the_attempt_cap_ends_a_poison_job_failed(db_session: Session) -> None:
    ev = _evaluation(db_session, status=EvaluationStatus.RETRYING, attempt=3)
    claimed = _claim(db_session, ev.id, "host-a:1", max_attempts=3)
    assert claimed.outcome is ClaimOutcome.EXHAUSTED
    row = _row(db_session, ev.id)
    assert row.status is EvaluationStatus.FAILED
    assert row.error_message == transitions.CRASH_LOOP_FAILURE
    assert row.finished_at is not None


def test_finished_and_missing_rows_are_not_claimed(db_session: Session) -> None:
    ev = _evaluation(db_session, status=EvaluationStatus.CANCELLED)
    assert _claim(db_session, ev.id, "a:1").outcome is ClaimOutcome.FINISHED
    assert _claim(db_session, ev.id + 1000, "a:1").outcome is ClaimOutcome.MISSING
    assert _row(db_session, ev.id).status is EvaluationStatus.CANCELLED


def test_a_repeated_result_write_keeps_one_row_with_the_latest_scores(db_session: Session) -> None:
    """Only the lease holder writes; a second write of the same evaluation (a requeued run, or a replayed
    persist step) replaces the result in place: still one row per submission and version."""
    ev = _evaluation(db_session)
    claim = _claim(db_session, ev.id, "a:1")
    assert transitions.succeed(db_session, evaluation_id=ev.id, owner="a:1", attempt=claim.attempt, scores=SCORES)
    # The same run writing again (e.g. a replayed persist step after the row was put back by hand).
    row = _row(db_session, ev.id)
    row.status = EvaluationStatus.RUNNING
    row.lease_owner = "a:1"
    db_session.commit()
    assert transitions.succeed(
        db_session, evaluation_id=ev.id, owner="a:1", attempt=claim.attempt, scores={**SCORES, "tp": 99}
    )
    db_session.commit()
    assert _results(db_session) == 1
    assert db_session.scalars(select(Result.tp)).one() == 99


def test_infrastructure_errors_retry_until_the_cap(db_session: Session) -> None:
    ev = _evaluation(db_session)
    claim = _claim(db_session, ev.id, "a:1", max_attempts=2)
    status = transitions.release_for_retry(
        db_session, evaluation_id=ev.id, owner="a:1", attempt=claim.attempt, max_attempts=2, detail="db down"
    )
    assert status is EvaluationStatus.RETRYING
    again = _claim(db_session, ev.id, "a:1", max_attempts=2)
    assert again.attempt == 2
    status = transitions.release_for_retry(
        db_session, evaluation_id=ev.id, owner="a:1", attempt=again.attempt, max_attempts=2, detail="db down"
    )
    assert status is EvaluationStatus.FAILED
    row = _row(db_session, ev.id)
    assert row.error_message == transitions.GENERIC_FAILURE
    assert row.error_detail == "db down"


def test_a_failure_keeps_one_line_for_the_participant_and_the_detail_for_organisers(db_session: Session) -> None:
    ev = _evaluation(db_session)
    claim = _claim(db_session, ev.id, "a:1")
    assert transitions.fail(
        db_session, evaluation_id=ev.id, owner="a:1", attempt=claim.attempt, message="bad file\nsecond", detail="tb"
    )
    row = _row(db_session, ev.id)
    assert (row.status, row.error_message, row.error_detail) == (EvaluationStatus.FAILED, "bad file", "tb")


def test_stale_leases_expire_to_retrying_or_failed_at_the_cap(db_session: Session) -> None:
    now = utcnow()
    fresh = _evaluation(db_session)
    _claim(db_session, fresh.id, "a:1", now=now)
    stale = _evaluation(db_session)
    _claim(db_session, stale.id, "a:2", now=now - timedelta(seconds=LEASE_S + 5))
    capped = _evaluation(db_session, attempt=2)
    _claim(db_session, capped.id, "a:3", now=now - timedelta(seconds=LEASE_S + 5))

    released = transitions.expire_stale_leases(db_session, max_attempts=3, now=now)

    assert released == [stale.id]
    assert _row(db_session, fresh.id).status is EvaluationStatus.RUNNING
    assert _row(db_session, stale.id).status is EvaluationStatus.RETRYING
    assert _row(db_session, stale.id).lease_owner is None
    assert _row(db_session, capped.id).status is EvaluationStatus.FAILED


def test_waiting_rows_are_found_once_per_requeue_interval(db_session: Session) -> None:
    old = _evaluation(db_session, queued_at=utcnow() - timedelta(minutes=5))
    recent = _evaluation(db_session)
    cutoff = utcnow() - timedelta(minutes=1)

    found = transitions.waiting(db_session, queued_before=cutoff)
    assert [p.evaluation_id for p in found] == [old.id]
    assert found[0].kind == "predictions"
    assert transitions.waiting(db_session, queued_before=cutoff, exclude=[old.id]) == []

    transitions.mark_requeued(db_session, evaluation_ids=[old.id])
    assert transitions.waiting(db_session, queued_before=cutoff) == []
    assert recent.id not in [p.evaluation_id for p in transitions.waiting(db_session, queued_before=cutoff)]


def test_the_reconciler_keeps_sharded_runs_with_waiting_shards_alive_and_no_other(db_session: Session) -> None:
    now = utcnow()
    sharded, plain, gone = (_evaluation(db_session) for _ in range(3))
    for ev, owner in ((sharded, "shards/1/1"), (plain, "host-a:1"), (gone, "shards/3/1")):
        claimed = _claim(db_session, ev.id, "host-a:1", now=now)
        if owner != "host-a:1":
            assert transitions.renew_lease(
                db_session,
                evaluation_id=ev.id,
                owner=claimed.owner,
                attempt=claimed.attempt,
                new_owner=owner,
                lease_s=LEASE_S,
                now=now,
            )
        db_session.commit()
    later = now + timedelta(seconds=LEASE_S - 1)
    # shards of `sharded` and a message of `plain` wait in the broker; nothing is left of `gone`'s shards
    renewed = transitions.renew_waiting_shards(
        db_session, evaluation_ids=[sharded.id, plain.id], lease_s=LEASE_S, now=later
    )
    db_session.commit()
    assert renewed == [sharded.id]
    expired = transitions.expire_stale_leases(db_session, max_attempts=3, now=now + timedelta(seconds=LEASE_S + 1))
    db_session.commit()
    assert sorted(expired) == sorted([plain.id, gone.id])
    assert _row(db_session, sharded.id).status is EvaluationStatus.RUNNING
