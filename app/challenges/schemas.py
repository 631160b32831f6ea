"""Pydantic schemas of challenges and phases (API only; the ORM models live in app.tables)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from app.scoring import ScoringOptions
from app.tables import EntryPolicy, LeaderboardVisibility, PhaseKind, RankingMetric, RunMode, SubmissionKind
from app.types import MAX_ID, GroupLabel, LongText, Slug, StrictInput, Title
from worker.vocabulary import DEFAULT_GPU_CLASS, GPU_CLASS_MAX_LENGTH, GPU_CLASS_PATTERN

Quota = Annotated[int, Field(ge=0, le=100_000)]
SHOW_LOGS = (
    "Participants may read the last 500 lines of each case's stdout and stderr of their model and container "
    "runs. Default on creation: off when scoring_options.hidden (a hidden test set), on when its cases are "
    "public (a sanity-check phase). Logs can show anything the program printed, test data included."
)
GPU_CLASS = (
    "The GPU class whose queue runs this phase's model and container submissions (`gpu`, or a slug such as "
    "`a100` served by `midog-eval gpu-host --gpu-class a100`)."
)
GPU_BUDGET = "GPU-hours all teams together may use for model and container runs here; null: no limit."
TEAM_SHARE = "The fraction (0-1] of gpu_budget_hours any one team may use; null: no per-team limit."
GpuClass = Annotated[
    str, Field(min_length=1, max_length=GPU_CLASS_MAX_LENGTH, pattern=f"^{GPU_CLASS_PATTERN}$", description=GPU_CLASS)
]
GpuBudget = Annotated[float, Field(gt=0, le=10_000_000, description=GPU_BUDGET)]
TeamShare = Annotated[float, Field(gt=0, le=1, description=TEAM_SHARE)]
RUN_MODE = (
    "How container submissions run: exec (the image's command once per case) or invoke (the image serves "
    "GET /health and POST /invoke on 127.0.0.1:4743, started once, called once per case). A submission may "
    "ask for the other mode."
)


class PhaseRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    challenge_id: int
    slug: str
    title: str
    kind: PhaseKind
    opens_at: datetime | None
    closes_at: datetime | None
    is_open: bool = Field(description="Whether submissions are accepted now.")
    allowed_kinds: list[SubmissionKind]
    daily_quota: int | None
    phase_quota: int | None
    failed_count_towards_quota: bool
    max_active_per_team: int
    leaderboard_visibility: LeaderboardVisibility
    shown_groups: list[str] | None
    seen_groups: list[str] | None = Field(
        default=None, description="Groups the training data covered; the board adds seen, unseen and their gap."
    )
    entry_policy: EntryPolicy
    ranking_metric: RankingMetric
    parent_phase_id: int | None
    time_limit_s: float
    memory_limit_mb: int
    evaluation_version: int
    test_set_id: int | None
    scoring_options: ScoringOptions
    scoring_fingerprint: str | None = Field(
        description="sha256 of the scorer version, scored options and test set; only results with this "
        "fingerprint (and this evaluation version) are ranked."
    )
    show_logs: bool = Field(default=False, description=SHOW_LOGS)
    run_mode: RunMode = Field(default=RunMode.EXEC, description=RUN_MODE)
    gpu_class: str = Field(default=DEFAULT_GPU_CLASS, description=GPU_CLASS)
    gpu_budget_hours: float | None = Field(default=None, description=GPU_BUDGET)
    team_share: float | None = Field(default=None, description=TEAM_SHARE)


class ChallengeRead(BaseModel):
    id: int
    slug: str
    title: str
    description: str
    requires_approval: bool
    is_published: bool
    phases: list[PhaseRead]


class ChallengeCreate(StrictInput):
    slug: Slug
    title: Title
    description: LongText = ""
    requires_approval: bool = False
    is_published: bool = True


class ChallengeUpdate(StrictInput):
    title: Title | None = None
    description: LongText | None = None
    requires_approval: bool | None = None
    is_published: bool | None = None


class _PhaseFields(StrictInput):
    kind: PhaseKind = PhaseKind.PRELIMINARY
    opens_at: AwareDatetime | None = None
    closes_at: AwareDatetime | None = None
    allowed_kinds: Annotated[
        list[SubmissionKind], Field(min_length=1, max_length=3, default_factory=lambda: [SubmissionKind.PREDICTIONS])
    ]
    test_set_id: Annotated[int, Field(ge=1, le=MAX_ID)] | None = None
    daily_quota: Quota | None = 5
    phase_quota: Quota | None = None
    failed_count_towards_quota: bool = True
    max_active_per_team: Annotated[int, Field(ge=1, le=1000)] = 1
    leaderboard_visibility: LeaderboardVisibility = LeaderboardVisibility.PUBLIC
    shown_groups: Annotated[list[GroupLabel], Field(max_length=100)] | None = None
    seen_groups: Annotated[
        list[GroupLabel] | None,
        Field(max_length=100, description="Groups (scanners) the training data covered, e.g. MIDOG 2021's three."),
    ] = None
    entry_policy: EntryPolicy = EntryPolicy.BEST
    ranking_metric: RankingMetric = RankingMetric.F1
    parent_phase_id: Annotated[int, Field(ge=1, le=MAX_ID)] | None = None
    time_limit_s: Annotated[float, Field(gt=0, le=7 * 24 * 3600)] = 3600.0
    memory_limit_mb: Annotated[int, Field(gt=0, le=4_000_000)] = 16384
    scoring_options: ScoringOptions = ScoringOptions()
    show_logs: bool | None = Field(default=None, description=SHOW_LOGS)
    run_mode: RunMode = Field(default=RunMode.EXEC, description=RUN_MODE)
    gpu_class: GpuClass = DEFAULT_GPU_CLASS
    gpu_budget_hours: GpuBudget | None = None
    team_share: TeamShare | None = None


class PhaseCreate(_PhaseFields):
    slug: Slug
    title: Title


class PhaseUpdate(StrictInput):
    """Only the fields given are changed; send null to clear a nullable field."""

    title: Title | None = None
    kind: PhaseKind | None = None
    opens_at: AwareDatetime | None = None
    closes_at: AwareDatetime | None = None
    allowed_kinds: Annotated[list[SubmissionKind], Field(min_length=1, max_length=3)] | None = None
    test_set_id: Annotated[int, Field(ge=1, le=MAX_ID)] | None = None
    daily_quota: Quota | None = None
    phase_quota: Quota | None = None
    failed_count_towards_quota: bool | None = None
    max_active_per_team: Annotated[int, Field(ge=1, le=1000)] | None = None
    leaderboard_visibility: LeaderboardVisibility | None = None
    shown_groups: Annotated[list[GroupLabel], Field(max_length=100)] | None = None
    seen_groups: Annotated[
        list[GroupLabel] | None,
        Field(max_length=100, description="Groups (scanners) the training data covered, e.g. MIDOG 2021's three."),
    ] = None
    entry_policy: EntryPolicy | None = None
    ranking_metric: RankingMetric | None = None
    parent_phase_id: Annotated[int, Field(ge=1, le=MAX_ID)] | None = None
    time_limit_s: Annotated[float, Field(gt=0, le=7 * 24 * 3600)] | None = None
    memory_limit_mb: Annotated[int, Field(gt=0, le=4_000_000)] | None = None
    scoring_options: Annotated[
        ScoringOptions | None,
        Field(description="Only the options given change; a scoring change may need ?reevaluate=true (409)."),
    ] = None
    show_logs: bool | None = Field(default=None, description=SHOW_LOGS)
    run_mode: RunMode | None = Field(default=None, description=RUN_MODE)
    gpu_class: GpuClass | None = None
    gpu_budget_hours: GpuBudget | None = None
    team_share: TeamShare | None = None
