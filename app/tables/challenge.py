"""Challenges and their phases (kind, schedule, quotas, leaderboard policy, gating, limits).

`SubmissionKind` is worker.vocabulary's, re-exported here for the tables that store it."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Integer, String, Text, UniqueConstraint, false
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.tables.base import Base, TimestampMixin, UTCDateTime, enum_column
from worker.vocabulary import SubmissionKind as SubmissionKind  # one spelling for the API and the workers

if TYPE_CHECKING:
    from app.tables.test_set import TestSet


class PhaseKind(enum.StrEnum):
    PRELIMINARY = "preliminary"
    FINAL = "final"


class RunMode(enum.StrEnum):
    """How a container runs: exec (its command once per case) or invoke (started once, it serves GET /health
    and POST /invoke on 127.0.0.1:4743 and is called once per case, its model loaded once)."""

    EXEC = "exec"
    INVOKE = "invoke"


class LeaderboardVisibility(enum.StrEnum):
    """public: everyone sees scores; private: organisers only (a team sees its own);
    hidden_until_close: nobody but organisers sees any score until the phase closes."""

    PUBLIC = "public"
    PRIVATE = "private"
    HIDDEN_UNTIL_CLOSE = "hidden_until_close"


class EntryPolicy(enum.StrEnum):
    """Which of a team's results stands for it on the leaderboard."""

    BEST = "best"
    LATEST = "latest"


class RankingMetric(enum.StrEnum):
    """What a board ranks by: detection F1 (default), AP, precision or recall; classification balanced
    accuracy (default) or ROC AUC (F1, precision and recall of the atypical class also apply)."""

    F1 = "f1"
    AP = "ap"
    PRECISION = "precision"
    RECALL = "recall"
    BALANCED_ACCURACY = "balanced_accuracy"
    ROC_AUC = "roc_auc"


class Challenge(TimestampMixin, Base):
    __tablename__ = "challenge"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    is_published: Mapped[bool] = mapped_column(Boolean, default=True)
    requires_approval: Mapped[bool] = mapped_column(Boolean, default=False)

    phases: Mapped[list[Phase]] = relationship(back_populates="challenge", order_by="Phase.id")


class Phase(TimestampMixin, Base):
    __tablename__ = "phase"
    __table_args__ = (UniqueConstraint("challenge_id", "slug"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    challenge_id: Mapped[int] = mapped_column(ForeignKey("challenge.id", ondelete="CASCADE"), index=True)
    slug: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(String(200))
    kind: Mapped[PhaseKind] = mapped_column(enum_column(PhaseKind), default=PhaseKind.PRELIMINARY)
    opens_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    closes_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # list of SubmissionKind values
    allowed_kinds: Mapped[list[str]] = mapped_column(JSON, default=lambda: [SubmissionKind.PREDICTIONS.value])
    test_set_id: Mapped[int | None] = mapped_column(ForeignKey("test_set.id", ondelete="RESTRICT"), index=True)
    # NULL: unlimited. No default here: the ORM would put a default in place of an explicit None (the API's
    # PhaseCreate defaults to 5 instead).
    daily_quota: Mapped[int | None] = mapped_column(Integer)
    phase_quota: Mapped[int | None] = mapped_column(Integer)
    failed_count_towards_quota: Mapped[bool] = mapped_column(Boolean, default=True)
    max_active_per_team: Mapped[int] = mapped_column(Integer, default=1)
    leaderboard_visibility: Mapped[LeaderboardVisibility] = mapped_column(
        enum_column(LeaderboardVisibility), default=LeaderboardVisibility.PUBLIC
    )
    # group labels (e.g. scanner names) shown as leaderboard columns; None shows every group
    shown_groups: Mapped[list[str] | None] = mapped_column(JSON)
    # the groups (scanners) the training data covered; the leaderboard then shows F1 on seen and unseen groups
    seen_groups: Mapped[list[str] | None] = mapped_column(JSON)
    entry_policy: Mapped[EntryPolicy] = mapped_column(enum_column(EntryPolicy), default=EntryPolicy.BEST)
    ranking_metric: Mapped[RankingMetric] = mapped_column(enum_column(RankingMetric), default=RankingMetric.F1)
    # gating: a team may submit here only after a succeeded evaluation in the parent phase
    parent_phase_id: Mapped[int | None] = mapped_column(ForeignKey("phase.id", ondelete="SET NULL"))
    time_limit_s: Mapped[float] = mapped_column(Float, default=3600.0)
    memory_limit_mb: Mapped[int] = mapped_column(Integer, default=16384)
    # bumped by "re-evaluate phase"; the leaderboard shows results of this version only
    evaluation_version: Mapped[int] = mapped_column(Integer, default=1)
    scoring_options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Participants may read the log tails (stdout/stderr) of their runs. The API's default follows
    # scoring_options.hidden: off for a hidden test set, on for one whose cases are public (sanity check).
    show_logs: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # how container submissions run unless a submission asks for another mode
    run_mode: Mapped[RunMode] = mapped_column(
        enum_column(RunMode, length=16), default=RunMode.EXEC, server_default=RunMode.EXEC.value
    )
    # the GPU class whose queue runs this phase's model and container submissions (worker.vocabulary.queue_for)
    gpu_class: Mapped[str] = mapped_column(String(32), default="gpu", server_default="gpu")
    # compute budget of model and container runs: total GPU-hours of the phase, and the fraction of it any one
    # team may use (app.submissions.budget); None: no limit
    gpu_budget_hours: Mapped[float | None] = mapped_column(Float)
    team_share: Mapped[float | None] = mapped_column(Float)
    # app.scoring.fingerprint of the scorer version, scored options and test set results must match to be
    # ranked; None while the phase has no test set
    scoring_fingerprint: Mapped[str | None] = mapped_column(String(64))

    challenge: Mapped[Challenge] = relationship(back_populates="phases")
    test_set: Mapped[TestSet | None] = relationship()
