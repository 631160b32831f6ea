"""Workers report themselves: a row per Celery node with its queues, what it can run, and a heartbeat.

At `worker_ready` the worker's main process works out its capabilities (queue cpu: predictions; queue gpu:
model and container submissions, each only when its runner, sandbox backend and isolation controls are
usable here, see worker.runners.runner_problem), upserts its `worker_node` row and starts a daemon thread
that refreshes `last_seen_at` every `worker_heartbeat_s`. A clean shutdown sets `stopped_at`. The API reads
these rows for /api/v1/health, the organisers' worker list, and to refuse a phase that accepts a kind no
running worker can run. Isolation controls that the deployment runs without are printed here at start-up.

Imports Celery signals, SQLAlchemy, app.db/app.tables/app.settings and the worker; never FastAPI or torch.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Any, cast

from celery.signals import worker_ready, worker_shutdown
from sqlalchemy import select, update

from app.db import session_scope
from app.settings import get_settings
from app.tables import WorkerNode, utcnow
from worker.runners import runner_problem
from worker.sandbox import isolation
from worker.vocabulary import CPU_QUEUE, GPU_QUEUE, is_gpu_queue

logger = logging.getLogger(__name__)

PARTICIPANT_CODE_KINDS = ("model", "container")
_stop = threading.Event()


def capabilities(queues: list[str]) -> dict[str, Any]:
    """What a worker consuming `queues` can run here, and why it cannot run the rest."""
    settings = get_settings()
    kinds: list[str] = []
    problems: dict[str, str] = {}
    if CPU_QUEUE in queues:
        kinds.append("predictions")
    if any(is_gpu_queue(q) for q in queues):
        for kind in PARTICIPANT_CODE_KINDS:
            problem = runner_problem(kind, settings)
            if problem is None:
                kinds.append(kind)
            else:
                problems[kind] = problem
    report: dict[str, Any] = {"kinds": kinds, "problems": problems}
    if any(is_gpu_queue(q) for q in queues):
        try:
            report["allowed_missing_controls"] = sorted(
                isolation.allowed_missing(settings.sandbox_allow_missing_controls)
            )
        except isolation.IsolationError as exc:
            report["allowed_missing_controls"] = []
            problems["isolation"] = str(exc)
    return report


def register(name: str, queues: list[str], report: dict[str, Any]) -> None:
    """Insert or refresh this worker's row (a restart under the same name takes the row over)."""
    now = utcnow()
    values = {
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
        "queues": ",".join(queues),
        "capabilities": report,
        "started_at": now,
        "last_seen_at": now,
        "stopped_at": None,
    }
    with session_scope() as session:
        row = session.scalars(select(WorkerNode).where(WorkerNode.name == name)).one_or_none()
        if row is None:
            session.add(WorkerNode(name=name, **values))
        else:
            for key, value in values.items():
                setattr(row, key, value)


def touch(name: str, *, stopped: bool = False) -> None:
    now = utcnow()
    values: dict[str, Any] = {"last_seen_at": now}
    if stopped:
        values["stopped_at"] = now
    with session_scope() as session:
        session.execute(update(WorkerNode).where(WorkerNode.name == name, WorkerNode.pid == os.getpid()).values(values))


def _announce(report: dict[str, Any], name: str) -> None:
    allowed = report.get("allowed_missing_controls") or []
    if allowed:
        logger.warning(
            "%s runs participant code WITHOUT these isolation controls (%s=%s)",
            name,
            isolation.ALLOW_MISSING_VARIABLE,
            ",".join(allowed),
        )
    for kind, problem in report["problems"].items():
        logger.error("%s cannot run %s submissions: %s", name, kind, problem)
    logger.info("%s can run: %s", name, ", ".join(report["kinds"]) or "nothing")


def _beat(name: str, interval_s: float) -> None:
    while not _stop.wait(interval_s):
        try:
            touch(name)
        except Exception:  # the database may be restarting; the next beat tries again
            logger.warning("heartbeat of %s not recorded", name, exc_info=True)


def _on_ready(sender: Any = None, **_: Any) -> None:
    name = str(getattr(sender, "hostname", "") or f"worker@{socket.gethostname()}")
    queues = sorted(sender.app.amqp.queues.consume_from) if sender is not None else [CPU_QUEUE, GPU_QUEUE]
    report = capabilities(queues)
    _announce(report, name)
    try:
        register(name, queues, report)
    except Exception:
        logger.exception("%s could not register itself; health and phase checks will not see it", name)
    _stop.clear()
    threading.Thread(target=_beat, args=(name, get_settings().worker_heartbeat_s), daemon=True).start()


def _on_shutdown(sender: Any = None, **_: Any) -> None:
    _stop.set()
    name = str(getattr(sender, "hostname", "") or "")
    if name:
        try:
            touch(name, stopped=True)
        except Exception:
            logger.warning("could not record that %s stopped", name)


cast(Any, worker_ready).connect(_on_ready, weak=False)
cast(Any, worker_shutdown).connect(_on_shutdown, weak=False)
