"""Workers as the API sees them: their self-reports (worker_node rows), the local supervisor's view when this
process runs `serve`, the health verdict, and the rule that a phase may accept model or container
submissions only while a worker that can run them is up. Never commits. Must not import FastAPI.

A worker is alive when it has not stopped and was heard of within `worker_stale_after_s` (for a worker that
`serve` supervises: and its current process is the one that reported); a row silent for a day (a host
that is gone) no longer counts against health.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.errors import InvalidInput, NotFound
from app.tables import WorkerNode, utcnow
from app.worker_hosts.schemas import GpuHostCache, GpuHostRead, Health, WorkerAdminRead, WorkerHealth

FORGET_AFTER = timedelta(days=1)
PARTICIPANT_CODE_KINDS = ("model", "container")


class SupervisedWorker(Protocol):
    """A worker process that this server started and restarts when it dies (app.cli.supervisor)."""

    @property
    def name(self) -> str: ...

    @property
    def queues(self) -> list[str]: ...

    @property
    def running(self) -> bool: ...

    @property
    def restarts(self) -> int: ...

    @property
    def pid(self) -> int | None: ...


class Supervisor(Protocol):
    def workers(self) -> Sequence[SupervisedWorker]: ...


def is_alive(row: WorkerNode, *, stale_after_s: float, now: datetime) -> bool:
    return row.stopped_at is None and row.last_seen_at >= now - timedelta(seconds=stale_after_s)


def worker_rows(session: Session) -> Sequence[WorkerNode]:
    return session.scalars(select(WorkerNode).order_by(WorkerNode.name)).all()


def health(
    rows: Iterable[WorkerNode] | None,
    *,
    supervised: Sequence[SupervisedWorker],
    stale_after_s: float,
    now: datetime | None = None,
) -> Health:
    """The verdict: degraded when the database is unreachable (`rows` None) or a worker is down."""
    now = now or utcnow()
    by_name = {w.name: w for w in supervised}
    listed: list[WorkerHealth] = []
    degraded = rows is None
    for row in rows or ():
        if row.stopped_at is not None and row.name not in by_name:
            continue  # stopped on purpose
        alive = is_alive(row, stale_after_s=stale_after_s, now=now)
        local = by_name.pop(row.name, None)
        if local is not None:
            # Up only once the process running now has reported in (a restarted worker is still starting).
            alive = alive and local.running and local.pid == row.pid
        elif not alive and row.last_seen_at < now - FORGET_AFTER:
            continue  # a host that is gone for good
        degraded = degraded or not alive
        listed.append(
            WorkerHealth(
                name=row.name,
                queues=[q for q in row.queues.split(",") if q],
                alive=alive,
                last_seen_at=row.last_seen_at,
                restarts=None if local is None else local.restarts,
            )
        )
    for local in by_name.values():  # started here but not (yet) reported in
        degraded = degraded or not local.running
        entry = WorkerHealth(name=local.name, queues=local.queues, alive=local.running, last_seen_at=None)
        listed.append(entry.model_copy(update={"restarts": local.restarts}))
    return Health(
        status="degraded" if degraded else "ok",
        database="unavailable" if rows is None else "ok",
        workers=sorted(listed, key=lambda w: w.name),
    )


def forget_worker(session: Session, *, name: str) -> None:
    row = session.scalars(select(WorkerNode).where(WorkerNode.name == name)).one_or_none()
    if row is None:
        raise NotFound(f"no worker {name!r}")
    session.delete(row)
    session.flush()


def gpus_text(gpus: Sequence[str]) -> str:
    """`2 x NVIDIA H100` (one name, counted), `NVIDIA A100, NVIDIA L4` (several), or `none (CPU)`."""
    if not gpus:
        return "none (CPU)"
    names = list(dict.fromkeys(gpus))
    return f"{len(gpus)} x {names[0]}" if len(names) == 1 else ", ".join(gpus)


def gpu_host_view(row: WorkerNode) -> GpuHostRead | None:
    """The GPU host part of a row reported through the job protocol (app.runner.hosts); None for others."""
    report = row.capabilities or {}
    if report.get("role") != "gpu-host":
        return None
    gpus = [str(g) for g in report.get("gpus") or []]
    cache = report.get("cache")
    return GpuHostRead(
        runner_token=str(report.get("runner_token", "")),
        host=row.hostname,
        gpu_classes=[str(c) for c in report.get("gpu_classes") or []],
        gpus=gpus,
        gpus_text=gpus_text(gpus),
        cache=GpuHostCache(**cache) if isinstance(cache, dict) else None,
    )


def admin_view(row: WorkerNode, *, stale_after_s: float, now: datetime | None = None) -> WorkerAdminRead:
    report = row.capabilities or {}
    alive = is_alive(row, stale_after_s=stale_after_s, now=now or utcnow())
    return WorkerAdminRead(
        name=row.name,
        queues=[q for q in row.queues.split(",") if q],
        alive=alive,
        stale=not alive and row.stopped_at is None,
        gpu_host=gpu_host_view(row),
        last_seen_at=row.last_seen_at,
        hostname=row.hostname,
        pid=row.pid,
        started_at=row.started_at,
        stopped_at=row.stopped_at,
        kinds=row.kinds,
        problems={str(k): str(v) for k, v in (report.get("problems") or {}).items()},
        allowed_missing_controls=[str(c) for c in report.get("allowed_missing_controls") or []],
        capabilities=report,
    )


def require_capable_workers(
    session: Session, *, kinds: Iterable[str], stale_after_s: float, now: datetime | None = None
) -> None:
    """422 naming each model/container kind that no live worker reports it can run, and why not."""
    now = now or utcnow()
    rows = [row for row in worker_rows(session) if is_alive(row, stale_after_s=stale_after_s, now=now)]
    for kind in kinds:
        if kind not in PARTICIPANT_CODE_KINDS or any(kind in row.kinds for row in rows):
            continue
        reasons = [
            f"{row.name}: {(row.capabilities or {}).get('problems', {}).get(kind)}"
            for row in rows
            if (row.capabilities or {}).get("problems", {}).get(kind)
        ]
        why = "; ".join(reasons) if reasons else "no gpu-queue worker is running"
        raise InvalidInput(
            f"allowed_kinds: no running worker can run {kind} submissions ({why}). Start a gpu-queue worker "
            f"(midog-eval worker --queues gpu) with a usable sandbox backend, then try again"
        )
