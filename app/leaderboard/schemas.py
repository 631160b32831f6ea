"""Pydantic schemas of the public leaderboard."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, create_model

from app.result_schema import board_pydantic_fields
from app.tables import EntryPolicy, LeaderboardVisibility, RankingMetric


class _EntryHead(BaseModel):
    rank: int | None = Field(description="Competition rank (ties share a rank); null for baselines.")
    rank_robustness: float | None = Field(
        description="Share of bootstrap resamples of the cases in which this entry keeps its rank."
    )
    team_id: int
    team_name: str
    submission_id: int
    method_name: str
    paper_url: str
    is_baseline: bool
    submitted_at: datetime
    score: float | None = Field(description="The phase's ranking metric.")
    score_ci_low: float | None = Field(
        default=None, description="95% bootstrap interval of the ranking metric (none for AP, which has none)."
    )
    score_ci_high: float | None = None


# The metric fields of worker.result_fields (and the intervals the board shows beside them), in list order.
_EntryMetrics = create_model("EntryMetrics", __base__=_EntryHead, **board_pydantic_fields())


class LeaderboardEntry(_EntryMetrics):  # type: ignore[misc,valid-type]
    """One row of a leaderboard: who, the ranking score, the result's metrics, groups and provenance."""

    groups: dict[str, dict[str, Any]] = Field(description="Per scanner/group metrics (the phase's shown groups).")
    generalisation: dict[str, Any] | None = Field(
        default=None,
        description="With seen groups declared: pooled F1 on seen and on unseen groups and the gap (seen minus "
        "unseen), each with its 95% interval (cases resampled within their group).",
    )
    scoring_fingerprint: str = Field(description="How this result was scored (equal to the board's).")
    provenance: dict[str, Any] = Field(
        default_factory=dict,
        description="Scorer version, scoring options, test-set digest, submission digest, runtime.",
    )


class LeaderboardRead(BaseModel):
    challenge_slug: str
    phase_id: int
    phase_slug: str
    phase_title: str
    visibility: LeaderboardVisibility
    scores_visible: bool = Field(description="False while the phase hides its leaderboard (entries empty).")
    entry_policy: EntryPolicy
    ranking_metric: RankingMetric
    evaluation_version: int
    task: str = Field(default="detection", description="detection or classification (MIDOG 2025 Track 2).")
    group_metric: str = Field(
        default="f1", description="The metric of each group's column: f1 (detection) or balanced_accuracy."
    )
    scoring_fingerprint: str | None = Field(
        description="sha256 of the scorer version, scored options and test set every ranked result shares."
    )
    group_labels: list[str]
    entries: list[LeaderboardEntry]
