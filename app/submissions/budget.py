"""Compute accounting and budgets of a phase's model and container runs.

The GPU-seconds of each evaluation are recorded when its result lands (`Evaluation.gpu_seconds`: the seconds
participant code ran, as measured by the worker or reported by the GPU host at `finish`; 0 for predictions).
Summed per phase and per team they are the phase's spend. A phase may set:

- `gpu_budget_hours`: the GPU-hours all teams together may use in the phase;
- `team_share`: the fraction of that budget (0 < share <= 1) any one team may use.

Both are optional (None: no limit); `team_share` needs `gpu_budget_hours`. Once a budget is spent (spend >=
limit), model and container uploads are refused with one line (403) naming the budget, the hours used and
what to do; predictions files are scored on the cpu queue and never refused by a budget. A run already queued
is not stopped: the budget is checked at upload, so a phase may end slightly over it by the runs in flight.
Never commits. Must not import FastAPI.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from app.errors import Forbidden
from app.tables import Evaluation, EvaluationStatus, Phase, Submission, SubmissionKind, Team

HOUR_S = 3600.0
PARTICIPANT_CODE = (SubmissionKind.MODEL, SubmissionKind.CONTAINER)


class BudgetSpent(Forbidden):
    """A phase's GPU budget, or a team's share of it, is spent: model and container uploads are refused."""


def phase_gpu_seconds(session: Session, *, phase_id: int) -> float:
    stmt = (
        select(func.coalesce(func.sum(Evaluation.gpu_seconds), 0.0))
        .join(Submission, Submission.id == Evaluation.submission_id)
        .where(Submission.phase_id == phase_id)
    )
    return float(session.scalar(stmt) or 0.0)


def team_gpu_seconds(session: Session, *, phase_id: int, team_id: int) -> float:
    stmt = (
        select(func.coalesce(func.sum(Evaluation.gpu_seconds), 0.0))
        .join(Submission, Submission.id == Evaluation.submission_id)
        .where(Submission.phase_id == phase_id, Submission.team_id == team_id)
    )
    return float(session.scalar(stmt) or 0.0)


def team_limit_hours(phase: Phase) -> float | None:
    if phase.gpu_budget_hours is None or phase.team_share is None:
        return None
    return phase.gpu_budget_hours * phase.team_share


def _hours(seconds: float) -> str:
    return f"{seconds / HOUR_S:.2f}"


def budget_refusal(session: Session, *, phase: Phase, team_id: int) -> str | None:
    """The one line that refuses a model or container upload of `team_id` to `phase`, or None (allowed)."""
    if phase.gpu_budget_hours is None:
        return None
    spent = phase_gpu_seconds(session, phase_id=phase.id)
    if spent >= phase.gpu_budget_hours * HOUR_S:
        return (
            f"GPU budget of this phase spent: {_hours(spent)} of {phase.gpu_budget_hours:g} GPU-hours used by all "
            "teams; no more model or container runs here (submit a predictions file if the phase accepts one, "
            "or ask the organisers to raise gpu_budget_hours)"
        )
    limit = team_limit_hours(phase)
    if limit is None:
        return None
    used = team_gpu_seconds(session, phase_id=phase.id, team_id=team_id)
    if used >= limit * HOUR_S:
        return (
            f"your team's share of the GPU budget is spent: {_hours(used)} of {limit:g} GPU-hours "
            f"({phase.team_share:g} of {phase.gpu_budget_hours:g}) used; no more model or container runs for your "
            "team here (ask the organisers to raise team_share or gpu_budget_hours)"
        )
    return None


def check_budget(session: Session, *, phase: Phase, team_id: int, kind: SubmissionKind) -> None:
    """Raise BudgetSpent (403, one line) for a model or container upload once a budget of the phase is spent."""
    if kind not in PARTICIPANT_CODE:
        return
    line = budget_refusal(session, phase=phase, team_id=team_id)
    if line is not None:
        raise BudgetSpent(line)


@dataclass(frozen=True)
class TeamSpend:
    """One team's compute in one phase: GPU-hours used, and its evaluations waiting or running."""

    phase_id: int
    team_id: int
    team_name: str
    gpu_hours: float
    queued: int
    running: int
    limit_hours: float | None


def spend_by_team(session: Session, *, phases: Sequence[Phase]) -> list[TeamSpend]:
    """Spend and queue per team and phase, for the organisers (teams with no evaluation are left out)."""
    if not phases:
        return []
    by_id = {p.id: p for p in phases}
    waiting = (EvaluationStatus.QUEUED, EvaluationStatus.RETRYING)
    stmt = (
        select(
            Submission.phase_id,
            Team.id,
            Team.name,
            func.coalesce(func.sum(Evaluation.gpu_seconds), 0.0),
            func.sum(case((Evaluation.status.in_(waiting), 1), else_=0)),
            func.sum(case((Evaluation.status == EvaluationStatus.RUNNING, 1), else_=0)),
        )
        .join(Submission, Submission.id == Evaluation.submission_id)
        .join(Team, Team.id == Submission.team_id)
        .where(Submission.phase_id.in_(list(by_id)))
        .group_by(Submission.phase_id, Team.id, Team.name)
        .order_by(Submission.phase_id, Team.name)
    )
    return [
        TeamSpend(
            phase_id=int(phase_id),
            team_id=int(team_id),
            team_name=str(name),
            gpu_hours=float(seconds or 0.0) / HOUR_S,
            queued=int(queued or 0),
            running=int(running or 0),
            limit_hours=team_limit_hours(by_id[int(phase_id)]),
        )
        for phase_id, team_id, name, seconds, queued, running in session.execute(stmt)
    ]
