"""Enqueue after commit, by task name, with ids only: the only place where the API touches Celery.

`enqueue_after_commit(session, RUN, queue=CPU_QUEUE, evaluation_id=42)` (names from worker.vocabulary)
remembers the task on the session and sends it only once the session's transaction has committed, so the
worker never sees an id that is not in the database yet, and a rolled-back request sends nothing. A broker
outage is logged and swallowed: the row is already committed `queued`, and the worker's reconciler re-enqueues it later.

The sender is replaceable (`task_sender(...)` in tests); by default it is `send_task` on a module-level
Celery client configured from settings. Never imports worker.tasks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import event
from sqlalchemy.orm import Session

from app.settings import get_settings

if TYPE_CHECKING:
    from celery import Celery

log = logging.getLogger(__name__)

TaskSender = Callable[[str, dict[str, int], str], None]
"""(task_name, kwargs of ids, queue) -> None; raising means the broker could not take it."""

_PENDING = "midog_pending_tasks"


@dataclass(frozen=True)
class PendingTask:
    name: str
    kwargs: dict[str, int]
    queue: str


_client: Celery | None = None


def get_celery_client() -> Celery:
    """A Celery client (no tasks registered) used only to publish messages by name."""
    global _client
    if _client is None:
        from celery import Celery

        settings = get_settings()
        _client = Celery("midog-eval-api", broker=settings.broker_url, set_as_current=False)
        _client.conf.update(
            task_serializer="json",
            accept_content=["json"],
            broker_connection_timeout=3,
            broker_connection_retry_on_startup=False,
        )
        if settings.redis_key_prefix and settings.broker_url.startswith(("redis://", "rediss://")):
            # Must match the workers' prefix (worker.celery_app), or messages land in queues nobody reads.
            _client.conf.broker_transport_options = {"global_keyprefix": settings.redis_key_prefix}
    return _client


def _celery_send(name: str, kwargs: dict[str, int], queue: str) -> None:
    get_celery_client().send_task(
        name,
        kwargs=kwargs,
        queue=queue,
        retry=True,
        retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 1},
    )


_sender: TaskSender = _celery_send


def set_task_sender(sender: TaskSender | None) -> TaskSender:
    """Replace the sender (None restores Celery); returns the previous one."""
    global _sender
    previous = _sender
    _sender = sender or _celery_send
    return previous


@contextmanager
def task_sender(sender: TaskSender) -> Iterator[TaskSender]:
    previous = set_task_sender(sender)
    try:
        yield sender
    finally:
        set_task_sender(previous)


def enqueue_after_commit(session: Session, task_name: str, *, queue: str, **ids: int) -> None:
    """Send `task_name(**ids)` to `queue` once `session` commits; nothing is sent if it rolls back."""
    for key, value in ids.items():
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"task arguments are ids only; {key}={value!r} is not an int")
    session.connection()  # make sure a transaction is open, so that its rollback drops what is pending
    pending: list[PendingTask] = session.info.setdefault(_PENDING, [])
    pending.append(PendingTask(task_name, dict(ids), queue))
    if not event.contains(session, "after_commit", _send_pending):
        event.listen(session, "after_commit", _send_pending)
        event.listen(session, "after_rollback", _drop_pending)


def pending_tasks(session: Session) -> list[PendingTask]:
    """What this session will send on commit (for tests and diagnostics)."""
    return list(session.info.get(_PENDING, []))


def _send_pending(session: Session) -> None:
    pending: list[PendingTask] = session.info.pop(_PENDING, [])
    for task in pending:
        try:
            _sender(task.name, task.kwargs, task.queue)
        except Exception:
            # The row is committed `queued`; the worker's reconciler re-enqueues it when the broker is back.
            log.exception("could not enqueue %s %s on %s; left for the reconciler", task.name, task.kwargs, task.queue)


def _drop_pending(session: Session) -> None:
    session.info.pop(_PENDING, None)
