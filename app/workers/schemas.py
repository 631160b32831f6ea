"""Pydantic schemas of worker health (public) and of the organisers' worker list."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field


class WorkerHealth(BaseModel):
    name: str = Field(description="Celery node name, e.g. gpu@host.")
    queues: list[str]
    alive: bool = Field(description="Heard of within the staleness window, or running under this server's watch.")
    last_seen_at: datetime | None
    restarts: int | None = Field(default=None, description="Restarts by this server's supervisor, if it runs it.")


class Health(BaseModel):
    status: Literal["ok", "degraded"] = Field(description="degraded while a worker is down or the database is.")
    database: Literal["ok", "unavailable"]
    workers: list[WorkerHealth]


class WorkerAdminRead(WorkerHealth):
    hostname: str
    pid: int
    started_at: datetime | None
    stopped_at: datetime | None
    kinds: list[str] = Field(description="Submission kinds it can run.")
    problems: dict[str, str] = Field(description="Why it cannot run the other kinds (missing backend or control).")
    allowed_missing_controls: list[str] = Field(
        description="Sandbox isolation controls this deployment explicitly runs without (opt-out)."
    )
    capabilities: dict[str, Any]
