"""Submissions (an uploaded file of one kind), their evaluations (state machine, lease) and results.

The worker builds its transitions and tasks on `Evaluation` and writes `Result`; keep these columns stable.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.tables.base import Base, TimestampMixin, UTCDateTime, enum_column, utcnow
from app.tables.challenge import Phase, RunMode, SubmissionKind
from app.tables.team import Participant, Team
from worker.result_fields import RESULT_FIELDS


class EvaluationStatus(enum.StrEnum):
    """queued -> running -> succeeded | failed | cancelled; running -> retrying -> running."""

    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_active(self) -> bool:
        return self in ACTIVE_STATUSES

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


ACTIVE_STATUSES = frozenset({EvaluationStatus.QUEUED, EvaluationStatus.RUNNING, EvaluationStatus.RETRYING})
TERMINAL_STATUSES = frozenset({EvaluationStatus.SUCCEEDED, EvaluationStatus.FAILED, EvaluationStatus.CANCELLED})


class Submission(TimestampMixin, Base):
    __tablename__ = "submission"
    __table_args__ = (Index("ix_submission_phase_id_team_id_created_at", "phase_id", "team_id", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    phase_id: Mapped[int] = mapped_column(ForeignKey("phase.id", ondelete="CASCADE"))
    team_id: Mapped[int] = mapped_column(ForeignKey("team.id", ondelete="CASCADE"), index=True)
    participant_id: Mapped[int | None] = mapped_column(ForeignKey("participant.id", ondelete="SET NULL"))
    kind: Mapped[SubmissionKind] = mapped_column(enum_column(SubmissionKind))
    # server-generated path of the stored file, relative to settings.storage_dir
    file_path: Mapped[str] = mapped_column(String(1024))
    original_filename: Mapped[str] = mapped_column(String(255), default="")
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    method_name: Mapped[str] = mapped_column(String(200), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    paper_url: Mapped[str] = mapped_column(String(500), default="")
    is_baseline: Mapped[bool] = mapped_column(Boolean, default=False)
    is_hidden: Mapped[bool] = mapped_column(Boolean, default=False)
    is_disqualified: Mapped[bool] = mapped_column(Boolean, default=False)
    # Container submissions: weights uploaded apart from the image (a .tar.gz under settings.storage_dir),
    # extracted read-only to /opt/ml/model for the run; None when the image carries its own.
    model_path: Mapped[str | None] = mapped_column(String(1024))
    model_filename: Mapped[str] = mapped_column(String(255), default="", server_default="")
    model_sha256: Mapped[str | None] = mapped_column(String(64))
    model_size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    # A model tarball submitted alone runs with the image of this earlier container submission of the same
    # team (file_path, sha256 and size_bytes are the image's, shared with it). No foreign key: on SQLite adding
    # one rebuilds the table, and dropping the old one would cascade to every evaluation; the row needs none,
    # since the image is reached through file_path.
    image_submission_id: Mapped[int | None] = mapped_column(Integer)
    # the container run mode the submission asked for; None: the phase's
    run_mode: Mapped[RunMode | None] = mapped_column(enum_column(RunMode, length=16))

    phase: Mapped[Phase] = relationship()
    team: Mapped[Team] = relationship()
    participant: Mapped[Participant | None] = relationship()
    evaluations: Mapped[list[Evaluation]] = relationship(back_populates="submission", order_by="Evaluation.version")


class Evaluation(TimestampMixin, Base):
    __tablename__ = "evaluation"
    __table_args__ = (UniqueConstraint("submission_id", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    submission_id: Mapped[int] = mapped_column(ForeignKey("submission.id", ondelete="CASCADE"), index=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[EvaluationStatus] = mapped_column(
        enum_column(EvaluationStatus), default=EvaluationStatus.QUEUED, index=True
    )
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    queued_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    progress_message: Mapped[str] = mapped_column(String(500), default="")
    # one line shown to the participant; error_detail (tracebacks, logs) is for organisers only
    error_message: Mapped[str] = mapped_column(String(500), default="")
    error_detail: Mapped[str] = mapped_column(Text, default="")
    gpu_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    # failed because of the platform (sandbox missing, crash loop, retries exhausted): costs the team no quota
    infrastructure_failure: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    submission: Mapped[Submission] = relationship(back_populates="evaluations")
    result: Mapped[Result | None] = relationship(back_populates="evaluation", uselist=False)


def _metric_columns() -> Any:
    """A mixin with one column per field of worker.result_fields.RESULT_FIELDS: Integer or Float, NOT NULL
    unless the field is nullable. Built from the list so that a metric is declared once; the names and types
    are those of the migrations."""
    columns = {f.name: mapped_column(Integer if f.kind == "int" else Float, nullable=f.nullable) for f in RESULT_FIELDS}
    return type("ResultMetricColumns", (), columns)


# Typed Any: the metric attributes of a Result (result.f1, Result.tp) are read through the list or by name.
ResultMetricColumns: Any = _metric_columns()


class Result(ResultMetricColumns, Base):  # type: ignore[misc]
    """One scored evaluation. Its metric columns (tp ... roc_auc) come from worker.result_fields."""

    __tablename__ = "result"
    __table_args__ = (UniqueConstraint("submission_id", "evaluation_version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    evaluation_id: Mapped[int] = mapped_column(ForeignKey("evaluation.id", ondelete="CASCADE"), unique=True)
    submission_id: Mapped[int] = mapped_column(ForeignKey("submission.id", ondelete="CASCADE"))
    evaluation_version: Mapped[int] = mapped_column(Integer)
    # the official evaluator's aggregate keys, as its metrics.json names them (e.g. froc_auc, tumor_<k>_f1)
    aggregates: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, server_default="{}")
    # group label -> the detection fields of worker.result_fields (tp ... the F1 interval)
    groups: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # "f1" | "precision" | "recall" -> [low, high]: 95% bootstrap intervals from the same resamples of cases
    intervals: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, server_default="{}")
    # case name -> {"tp", "fp", "fn"}; organiser only (never shown to participants)
    cases: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # model archives that declare features: the representation shift of their features between scanners
    # (worker.evaluation.representation); None for every other submission
    representation: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # share of bootstrap resamples in which this entry keeps its leaderboard rank (None until computed)
    rank_robustness: Mapped[float | None] = mapped_column(Float)
    # app.scoring.fingerprint of how this result was scored; ranked only while it equals the phase's
    scoring_fingerprint: Mapped[str] = mapped_column(String(64), index=True)
    # how it was produced: scorer version, scoring options, test-set digest, submission digest, runtime
    provenance: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    evaluation: Mapped[Evaluation] = relationship(back_populates="result")
