"""enqueue_after_commit: sent only after commit, never after rollback, ids only."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.orm import Session

from app.queue import enqueue_after_commit, pending_tasks, task_sender


def test_sent_after_commit_only(db_session: Session) -> None:
    sent: list[Any] = []
    with task_sender(lambda n, k, q: sent.append((n, k, q))):
        enqueue_after_commit(db_session, "evaluation.run", queue="gpu", evaluation_id=7)
        assert sent == []
        assert len(pending_tasks(db_session)) == 1
        db_session.commit()
        assert sent == [("evaluation.run", {"evaluation_id": 7}, "gpu")]
        enqueue_after_commit(db_session, "evaluation.run", queue="gpu", evaluation_id=8)
        db_session.rollback()
        db_session.commit()
    assert sent == [("evaluation.run", {"evaluation_id": 7}, "gpu")]


def test_only_ids(db_session: Session) -> None:
    with pytest.raises(TypeError):
        enqueue_after_commit(db_session, "evaluation.run", queue="cpu", evaluation_id="7")  # type: ignore[arg-type]


def test_sender_failure_is_swallowed(db_session: Session) -> None:
    def broken(*_: Any) -> None:
        raise OSError("down")

    with task_sender(broken):
        enqueue_after_commit(db_session, "evaluation.run", queue="cpu", evaluation_id=1)
        db_session.commit()  # must not raise
