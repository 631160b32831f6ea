"""Model-level invariants on both backends: UTC round trips, naive datetimes refused, result uniqueness."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.orm import Session

from app.tables import (
    Challenge,
    Evaluation,
    EvaluationStatus,
    Phase,
    Result,
    Submission,
    SubmissionKind,
    Team,
)


def _submission(session: Session) -> Submission:
    challenge = Challenge(slug="c", title="C")
    phase = Phase(challenge=challenge, slug="p", title="P")
    team = Team(name="t", contact_email="t@example.org")
    sub = Submission(
        phase=phase, team=team, kind=SubmissionKind.PREDICTIONS, file_path="x", sha256="0" * 64, size_bytes=1
    )
    session.add(sub)
    session.flush()
    return sub


def test_datetimes_round_trip_as_aware_utc(db_session: Session) -> None:
    sub = _submission(db_session)
    cet = timezone(timedelta(hours=1))
    when = datetime(2026, 3, 1, 12, 30, tzinfo=cet)
    ev = Evaluation(submission_id=sub.id, version=1, lease_expires_at=when)
    db_session.add(ev)
    db_session.commit()
    db_session.expire_all()
    loaded = db_session.scalars(select(Evaluation).where(Evaluation.id == ev.id)).one()
    assert loaded.lease_expires_at == when
    assert loaded.lease_expires_at is not None
    assert loaded.lease_expires_at.utcoffset() == timedelta(0)
    assert loaded.lease_expires_at.tzinfo == UTC
    assert loaded.status is EvaluationStatus.QUEUED
    assert loaded.queued_at.tzinfo == UTC


def test_naive_datetimes_are_refused(db_session: Session) -> None:
    sub = _submission(db_session)
    db_session.add(Evaluation(submission_id=sub.id, version=1, lease_expires_at=datetime(2026, 1, 1)))
    with pytest.raises(StatementError):
        db_session.flush()


def test_one_result_per_submission_and_evaluation_version(db_session: Session) -> None:
    sub = _submission(db_session)
    ev1 = Evaluation(submission_id=sub.id, version=1, status=EvaluationStatus.SUCCEEDED)
    ev2 = Evaluation(submission_id=sub.id, version=2, status=EvaluationStatus.SUCCEEDED)
    db_session.add_all([ev1, ev2])
    db_session.flush()
    metrics = {"tp": 1, "fp": 0, "fn": 0, "precision": 1.0, "recall": 1.0, "f1": 1.0, "scoring_fingerprint": "f" * 64}
    db_session.add(Result(evaluation_id=ev1.id, submission_id=sub.id, evaluation_version=1, **metrics))
    db_session.flush()
    db_session.add(Result(evaluation_id=ev2.id, submission_id=sub.id, evaluation_version=1, **metrics))
    with pytest.raises(IntegrityError):
        db_session.flush()
