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


def test_redis_key_prefix_reaches_the_published_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    """The API publishes under the same key prefix as the workers consume (MIDOG_REDIS_KEY_PREFIX)."""
    import os
    import uuid

    import redis

    from app import queue
    from app.settings import get_settings

    url = os.environ.get("MIDOG_TEST_REDIS_URL", "redis://127.0.0.1:6379/0").rsplit("/", 1)[0] + "/14"
    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(f"Redis at {url} is unreachable: {exc}")
        pytest.skip(f"Redis at {url} is unreachable: {exc}")
    prefix = f"midog-test-{uuid.uuid4().hex[:8]}:"
    monkeypatch.setenv("MIDOG_REDIS_URL", url)
    monkeypatch.setenv("MIDOG_BROKER_URL", "")
    monkeypatch.setenv("MIDOG_REDIS_KEY_PREFIX", prefix)
    get_settings.cache_clear()
    monkeypatch.setattr(queue, "_client", None)
    try:
        queue._celery_send("evaluation.run", {"evaluation_id": 7}, "cpu")
        assert client.llen(f"{prefix}cpu") == 1
    finally:
        for key in client.scan_iter(f"{prefix}*"):
            client.delete(key)
        get_settings.cache_clear()
        monkeypatch.setattr(queue, "_client", None)
