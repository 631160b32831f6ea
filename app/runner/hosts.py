"""GPU hosts report themselves through the job protocol: one `worker_node` row per runner token and host name.

A heartbeat (`POST /api/v1/runner/heartbeat`, runner token) upserts the row named `gpu-host:<token name>:<host>`
with the queues of the classes it serves and, in its capabilities, `role: gpu-host`, the runner token's name
and id, its classes, its GPUs (names; empty: none, the runs use the CPU), its cache (bytes used, cap, hits,
misses) and the kinds its runner can run. `last_seen_at` is the heartbeat's time; the worker list marks a host
stale when it has not been heard of within `worker_stale_after_s` (app.worker_hosts.service). A host may only write
its own token's rows. Never commits. Must not import FastAPI.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.errors import InvalidInput
from app.runner.schemas import HeartbeatRequest
from app.tables import ApiToken, WorkerNode, utcnow
from worker.vocabulary import gpu_queue

GPU_HOST_ROLE = "gpu-host"
_HOST_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._@-")


def worker_name(token: ApiToken, host: str) -> str:
    return f"{GPU_HOST_ROLE}:{token.name}:{host}".replace("/", "_")[:200]


def record_heartbeat(session: Session, *, token: ApiToken, report: HeartbeatRequest) -> str:
    """Insert or refresh the host's row; returns its name in the worker list."""
    if not set(report.host) <= _HOST_CHARS or not report.host[0].isalnum():
        raise InvalidInput("host: letters, digits, '.', '_', '@' or '-', starting with a letter or digit")
    classes = list(dict.fromkeys(report.gpu_classes))
    queues = ",".join(gpu_queue(c) for c in classes)
    if len(queues) > 100:
        raise InvalidInput("gpu_classes: their queue names exceed 100 characters together; serve fewer classes")
    capabilities: dict[str, Any] = {
        "role": GPU_HOST_ROLE,
        "runner_token": token.name,
        "runner_token_id": token.id,
        "gpu_classes": classes,
        "gpus": list(report.gpus),
        "cache": report.cache.model_dump() if report.cache is not None else None,
        "kinds": list(dict.fromkeys(report.kinds)),
        "problems": dict(report.problems),
    }
    name = worker_name(token, report.host)
    now = utcnow()
    row = session.scalars(select(WorkerNode).where(WorkerNode.name == name)).one_or_none()
    if row is None:
        row = WorkerNode(name=name, started_at=now)
        session.add(row)
    row.hostname = report.host
    row.pid = 0
    row.queues = queues
    row.capabilities = capabilities
    row.last_seen_at = now
    row.stopped_at = None
    session.flush()
    return name
