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
    stale: bool = Field(default=False, description="Not stopped, but not heard of within the staleness window.")
    gpu_host: GpuHostRead | None = Field(default=None, description="Set for a GPU host of the job protocol.")


class GpuHostCache(BaseModel):
    used_bytes: int
    max_bytes: int
    hits: int
    misses: int


class GpuHostRead(BaseModel):
    """What a GPU host (midog-eval gpu-host) reported in its last heartbeat through the job protocol."""

    runner_token: str = Field(description="The name of the host's runner token.")
    host: str
    gpu_classes: list[str]
    gpus: list[str] = Field(description="The GPUs it sees, by name; empty: none (its runs use the CPU).")
    gpus_text: str = Field(description='"2 x NVIDIA H100", or "none (CPU)".')
    cache: GpuHostCache | None
