"""Request and response bodies of the job protocol (app.runner.router). Pydantic only."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from worker.vocabulary import DEFAULT_GPU_CLASS, GPU_CLASS_MAX_LENGTH, GPU_CLASS_PATTERN


class RunnerRead(BaseModel):
    token_id: int
    name: str
    lease_s: float
    heartbeat_s: float


GpuClass = Annotated[str, Field(min_length=1, max_length=GPU_CLASS_MAX_LENGTH, pattern=f"^{GPU_CLASS_PATTERN}$")]
GpuClasses = Annotated[list[GpuClass], Field(min_length=1, max_length=8)]


class ClaimRequest(BaseModel):
    host: str = Field(min_length=1, max_length=100, description="The GPU host's name and process, e.g. gpu-a:4242.")
    gpu_classes: GpuClasses = Field(
        default_factory=lambda: [DEFAULT_GPU_CLASS],
        description="The GPU classes this host serves; a job of a phase of another class is refused (409).",
    )


class CacheReport(BaseModel):
    used_bytes: int = Field(ge=0)
    max_bytes: int = Field(ge=0)
    hits: int = Field(default=0, ge=0)
    misses: int = Field(default=0, ge=0)


class HeartbeatRequest(BaseModel):
    host: str = Field(min_length=1, max_length=61, description="The GPU host's name (midog-eval gpu-host --name).")
    gpu_classes: GpuClasses = Field(default_factory=lambda: [DEFAULT_GPU_CLASS])
    gpus: Annotated[list[Annotated[str, Field(max_length=200)]], Field(max_length=64)] = Field(
        default_factory=list, description="The GPUs the host sees, by name; empty: none (the runs use the CPU)."
    )
    cache: CacheReport | None = None
    kinds: Annotated[list[Literal["model", "container"]], Field(max_length=2)] = Field(
        default_factory=list, description="The submission kinds its runner can run."
    )
    problems: dict[str, Annotated[str, Field(max_length=500)]] = Field(
        default_factory=dict, description="Why it cannot run the other kinds.", max_length=4
    )


class HeartbeatRead(BaseModel):
    worker: str = Field(description="The host's name in the worker list.")
    heartbeat_s: float = Field(description="Send the next heartbeat within this many seconds.")


class ClaimRead(BaseModel):
    claimed: bool
    outcome: str = Field(description="claimed, finished, held (a live run has it), exhausted or missing.")
    attempt: int = 0
    job_key: str = Field(default="", description="Send as X-Job-Key on every call of this job; shown only here.")
    lease_s: float
    heartbeat_s: float


class LeaseRequest(BaseModel):
    progress: float | None = Field(default=None, ge=0.0, le=1.0)
    message: str = Field(default="", max_length=500)


class FinishRequest(BaseModel):
    run_seconds: float = Field(ge=0.0, le=30 * 24 * 3600.0, description="Seconds participant code ran (GPU time).")
    run_info: dict[str, Any] = Field(default_factory=dict, description="What the runner tells of its run.")


class FailureRequest(BaseModel):
    kind: Literal["participant", "infrastructure"]
    message: str = Field(default="", max_length=500, description="participant: the one line shown to the team.")
    detail: str = Field(default="", max_length=20000, description="For the organisers only.")


class JobState(BaseModel):
    status: str
