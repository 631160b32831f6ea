"""Request and response bodies of the job protocol (app.runner.router). Pydantic only."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class RunnerRead(BaseModel):
    token_id: int
    name: str
    lease_s: float
    heartbeat_s: float


class ClaimRequest(BaseModel):
    host: str = Field(min_length=1, max_length=100, description="The GPU host's name and process, e.g. gpu-a:4242.")


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
