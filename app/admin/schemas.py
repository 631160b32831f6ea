"""Pydantic schemas of the organiser API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from app.submissions.schemas import SubmissionRead
from app.tables import EvaluationStatus, TokenScope
from app.types import MAX_ID, LongText, Name, ServerPath, StrictInput


class TestSetCreate(StrictInput):
    name: Name
    path: ServerPath = Field(description="Server directory holding manifest.json, images/ and ground-truth/.")
    description: LongText = ""


class TestSetUploadForm(StrictInput):
    """The text fields of a test-set archive upload (multipart, beside the `file` part)."""

    __test__ = False
    name: Name
    description: LongText = ""


class TestSetRead(BaseModel):
    __test__ = False
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    description: str
    manifest_path: str
    manifest_sha256: str
    scoring_digest: str = Field(description="sha256 over manifest.json and the ground truth, checked before each run.")
    task: str = Field(description="detection or classification: the phases it can serve.")
    case_count: int
    created_at: datetime


class TeamAdminRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    contact_email: str
    is_approved: bool
    is_disqualified: bool
    created_at: datetime


class TeamUpdate(StrictInput):
    is_approved: bool | None = None
    is_disqualified: bool | None = None


class TokenCreate(StrictInput):
    scope: TokenScope
    name: Name = "admin"
    participant_id: int | None = Field(default=None, ge=1, le=MAX_ID, description="Required for participant scope.")
    expires_at: AwareDatetime | None = None


class TokenRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    prefix: str
    name: str
    scope: TokenScope
    participant_id: int | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


class AuditEventRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    at: datetime
    token_id: int | None
    actor: str = Field(description="The token's prefix and name.")
    action: str = Field(description="The operation, e.g. update_phase.")
    target: str = Field(description="Method and path of the request.")
    target_id: int | None
    details: dict[str, Any] = Field(description="The fields given (secrets replaced by ***).")


class EvaluationAdminRead(BaseModel):
    id: int
    version: int
    status: EvaluationStatus
    attempt: int
    lease_owner: str | None
    lease_expires_at: datetime | None
    queued_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    progress: float
    progress_message: str
    error_message: str
    error_detail: str
    infrastructure_failure: bool = Field(description="Failed because of the platform; costs the team no quota.")
    gpu_seconds: float
    result: dict[str, Any] | None = Field(description="All result columns, per-case counts included.")


class SubmissionAdminRead(SubmissionRead):
    team_name: str
    file_path: str
    model_path: str | None = None
    evaluations: list[EvaluationAdminRead]


class SubmissionUpdate(StrictInput):
    is_hidden: bool | None = None
    is_disqualified: bool | None = None
    is_baseline: bool | None = None


class ReevaluateRead(BaseModel):
    phase_id: int
    evaluation_version: int
    scoring_fingerprint: str | None
    queued: int


class PhaseProgressRead(BaseModel):
    """Where the phase's current evaluation version stands."""

    phase_id: int
    evaluation_version: int
    scoring_fingerprint: str | None
    scoring_current: bool = Field(
        description="False when this server's scorer or the test set's content differs from the phase's "
        "fingerprint: new results would not be ranked until the phase is re-evaluated."
    )
    submissions: int = Field(description="Submissions of the phase that are not disqualified.")
    by_status: dict[str, int] = Field(description="Evaluations of the current version, by status.")
    ranked: int = Field(description="Results of the current version under the phase's fingerprint.")
    not_started: int = Field(description="Submissions with no evaluation of the current version.")


class BundleApplied(BaseModel):
    """What applying a bundle did: the plan's steps (empty when the server already matched)."""

    steps: list[str]
    applied: bool = Field(description="False for a dry run or an empty plan.")


class TeamComputeRead(BaseModel):
    team_id: int
    team_name: str
    gpu_hours: float = Field(description="GPU-hours of the team's evaluations in this phase.")
    limit_hours: float | None = Field(description="gpu_budget_hours x team_share; null: no per-team limit.")
    queued: int = Field(description="Evaluations waiting (queued or retrying).")
    running: int


class PhaseComputeRead(BaseModel):
    phase_id: int
    phase: str = Field(description="challenge/phase slugs.")
    gpu_class: str
    gpu_budget_hours: float | None
    team_share: float | None
    gpu_hours: float = Field(description="GPU-hours of all teams' evaluations in this phase.")
    budget_spent: bool
    queued: int
    running: int
    teams: list[TeamComputeRead]
