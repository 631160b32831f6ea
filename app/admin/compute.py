"""The organisers' view of compute: GPU-hours spent per phase and per team against the phase's budget, and
what is queued or running (app.submissions.budget holds the rules and the sums). Never commits. Must not
import FastAPI.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from app.admin.schemas import PhaseComputeRead, TeamComputeRead
from app.submissions.budget import spend_by_team
from app.tables import Phase


def compute_report(session: Session) -> list[PhaseComputeRead]:
    """Every phase with its spend, budget and queue, and each team that has evaluations there."""
    phases = list(
        session.scalars(select(Phase).options(selectinload(Phase.challenge)).order_by(Phase.challenge_id, Phase.id))
    )
    by_phase: dict[int, list[TeamComputeRead]] = {p.id: [] for p in phases}
    for spend in spend_by_team(session, phases=phases):
        by_phase[spend.phase_id].append(
            TeamComputeRead(
                team_id=spend.team_id,
                team_name=spend.team_name,
                gpu_hours=round(spend.gpu_hours, 4),
                limit_hours=spend.limit_hours,
                queued=spend.queued,
                running=spend.running,
            )
        )
    report = []
    for phase in phases:
        teams = by_phase[phase.id]
        hours = sum(t.gpu_hours for t in teams)
        report.append(
            PhaseComputeRead(
                phase_id=phase.id,
                phase=f"{phase.challenge.slug}/{phase.slug}",
                gpu_class=phase.gpu_class,
                gpu_budget_hours=phase.gpu_budget_hours,
                team_share=phase.team_share,
                gpu_hours=round(hours, 4),
                budget_spent=phase.gpu_budget_hours is not None and hours >= phase.gpu_budget_hours,
                queued=sum(t.queued for t in teams),
                running=sum(t.running for t in teams),
                teams=teams,
            )
        )
    return report
