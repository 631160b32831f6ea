"""Pydantic schemas of submissions, their evaluation status, results, quotas and status events."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, create_model

from app.result_schema import pydantic_fields
from app.tables import EvaluationStatus, RunMode, SubmissionKind
from worker.result_fields import fields_of

# The metrics of worker.result_fields: detection fields (every result), then the task, then the fields only a
# classification phase fills; built from the list (app.result_schema), in the order of the JSON keys.
_DetectionMetrics = create_model("DetectionMetrics", **pydantic_fields(fields_of("detection")))


class MetricsRead(_DetectionMetrics):  # type: ignore[misc,valid-type]
    """The counts and rates every result has (worker.result_fields, task detection)."""


class _ResultTask(MetricsRead):
    task: str = Field(
        default="detection", description="detection, or classification (Track 2: read balanced_accuracy, roc_auc)."
    )


_ResultMetrics = create_model("ResultMetrics", __base__=_ResultTask, **pydantic_fields(fields_of("classification")))


class ResultRead(_ResultMetrics):  # type: ignore[misc,valid-type]
    evaluation_version: int
    groups: dict[str, dict[str, Any]] = Field(description="Group label (e.g. scanner) -> the same metrics.")
    rank_robustness: float | None
    intervals: dict[str, list[float]] = Field(
        description="95% bootstrap intervals of f1, precision and recall (empty when the phase runs none)."
    )
    scoring_fingerprint: str = Field(description="sha256 of the scorer version, scored options and test set.")
    ranked: bool = Field(
        description="Whether the result can stand on the board: scored under the phase's current fingerprint "
        "and evaluation version (hidden, disqualified and superseded submissions aside)."
    )
    provenance: dict[str, Any] = Field(
        description="How it was produced: scorer version, scoring options, test-set digest, submission digest, "
        "runtime (runner, backend, device, image, durations)."
    )


class EvaluationRead(BaseModel):
    id: int
    version: int
    status: EvaluationStatus
    attempt: int
    progress: float
    progress_message: str
    error_message: str = Field(
        description="One line for the participant; the run logs only where the phase shows them (logs_shown)."
    )
    queued_at: datetime
    started_at: datetime | None = Field(description="Hidden (null) while the phase hides scores.")
    finished_at: datetime | None
    gpu_seconds: float | None


class SubmissionRead(BaseModel):
    id: int
    phase_id: int
    team_id: int
    kind: SubmissionKind
    original_filename: str
    sha256: str
    size_bytes: int
    method_name: str
    description: str
    paper_url: str
    is_baseline: bool
    is_hidden: bool
    is_disqualified: bool
    created_at: datetime
    scores_hidden: bool = Field(description="True while the phase's policy hides scores from participants.")
    model_filename: str = Field(default="", description="Container submissions: the model tarball's file name.")
    model_sha256: str | None = Field(default=None, description="Container submissions: the model tarball's sha256.")
    model_size_bytes: int | None = None
    image_submission_id: int | None = Field(
        default=None, description="The earlier container submission whose image this one runs with its model."
    )
    run_mode: RunMode | None = Field(
        default=None, description="Container submissions: exec or invoke (as asked, else the phase's run_mode)."
    )
    logs_shown: bool = Field(
        default=False, description="The phase lets the team read this submission's run logs (GET .../logs)."
    )
    evaluation: EvaluationRead | None
    result: ResultRead | None


class QuotaRead(BaseModel):
    phase_id: int
    daily_limit: int | None
    daily_used: int
    daily_remaining: int | None
    daily_resets_at: datetime
    phase_limit: int | None
    phase_used: int
    phase_remaining: int | None
    active_evaluations: int
    max_active: int
    failed_count_towards_quota: bool


class StatusEvent(BaseModel):
    """The `data` of one server-sent `status` event."""

    submission_id: int
    evaluation_id: int | None
    status: EvaluationStatus | None
    progress: float
    progress_message: str
    error_message: str


class CaseLog(BaseModel):
    case: str
    bytes: int = Field(description="Size of the kept tail (at most the last 500 lines of stdout and stderr).")
    truncated: bool = Field(description="Only the end is given here; ask for this case alone for all of it.")
    log: str


class SubmissionLogs(BaseModel):
    """The log tails of the current evaluation's runs, one per case that printed anything."""

    submission_id: int
    evaluation_id: int | None
    cases: list[CaseLog]
