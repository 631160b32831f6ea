"""The public leaderboard of a phase in ONE SQL statement (read from the standings that
app.leaderboard.standings keeps current) and its CSV form (formula-injection safe). Must not import FastAPI.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, select, true
from sqlalchemy.orm import Session

from app.challenges.service import scores_hidden_for
from app.errors import NotFound
from app.leaderboard.schemas import LeaderboardEntry as EntryRead
from app.leaderboard.schemas import LeaderboardRead
from app.models import Challenge, LeaderboardEntry, Phase, Result, Submission, Team, utcnow
from app.submissions.service import filter_groups


def leaderboard_statement(phase_id: int) -> Any:
    """One statement: the phase (and its challenge) left-joined to its standings rows and their result,
    submission and team. The standings are kept current by app.leaderboard.standings."""
    entry = (
        select(
            LeaderboardEntry.position,
            LeaderboardEntry.rank,
            LeaderboardEntry.score,
            Result.id.label("result_id"),
            Result.tp,
            Result.fp,
            Result.fn,
            Result.precision,
            Result.recall,
            Result.f1,
            Result.ap,
            Result.f1_ci_low,
            Result.f1_ci_high,
            Result.groups,
            Result.rank_robustness,
            Submission.id.label("submission_id"),
            Submission.team_id,
            Submission.method_name,
            Submission.paper_url,
            Submission.is_baseline,
            Submission.created_at.label("submitted_at"),
            Team.name.label("team_name"),
        )
        .join(Result, Result.id == LeaderboardEntry.result_id)
        .join(Submission, Submission.id == Result.submission_id)
        .join(Team, Team.id == Submission.team_id)
        .where(LeaderboardEntry.phase_id == phase_id)
        .subquery("entries")
    )
    return (
        select(
            Phase.id.label("phase_id"),
            Phase.slug.label("phase_slug"),
            Phase.title.label("phase_title"),
            Phase.leaderboard_visibility,
            Phase.closes_at,
            Phase.entry_policy,
            Phase.ranking_metric,
            Phase.evaluation_version,
            Phase.shown_groups,
            Challenge.slug.label("challenge_slug"),
            Challenge.is_published,
            entry,
        )
        .select_from(Phase)
        .join(Challenge, Challenge.id == Phase.challenge_id)
        .outerjoin(entry, true())
        .where(Phase.id == phase_id)
        .order_by(entry.c.position)
    )


def _phase_view(row: Row[Any], now: datetime) -> tuple[bool, list[str] | None]:
    return scores_hidden_for(row.leaderboard_visibility, row.closes_at, now), row.shown_groups


def get_leaderboard(session: Session, *, phase_id: int, as_organiser: bool = False) -> LeaderboardRead:
    """The leaderboard with one SQL statement; hidden scores are never put in the response (U7)."""
    rows = session.execute(leaderboard_statement(phase_id)).all()
    if not rows or (not rows[0].is_published and not as_organiser):
        raise NotFound(f"no phase {phase_id}")
    head = rows[0]
    hidden, shown = _phase_view(head, utcnow())
    visible = as_organiser or not hidden
    entries: list[EntryRead] = []
    labels: dict[str, None] = {}
    if visible:
        for row in rows:
            if row.result_id is None:
                continue
            groups = filter_groups(row.groups or {}, shown)
            labels.update(dict.fromkeys(groups))
            entries.append(
                EntryRead(
                    rank=row.rank,
                    rank_robustness=row.rank_robustness,
                    team_id=row.team_id,
                    team_name=row.team_name,
                    submission_id=row.submission_id,
                    method_name=row.method_name,
                    paper_url=row.paper_url,
                    is_baseline=row.is_baseline,
                    submitted_at=row.submitted_at,
                    score=row.score,
                    tp=row.tp,
                    fp=row.fp,
                    fn=row.fn,
                    precision=row.precision,
                    recall=row.recall,
                    f1=row.f1,
                    ap=row.ap,
                    f1_ci_low=row.f1_ci_low,
                    f1_ci_high=row.f1_ci_high,
                    groups=groups,
                )
            )
    return LeaderboardRead(
        challenge_slug=head.challenge_slug,
        phase_id=head.phase_id,
        phase_slug=head.phase_slug,
        phase_title=head.phase_title,
        visibility=head.leaderboard_visibility,
        scores_visible=visible,
        entry_policy=head.entry_policy,
        ranking_metric=head.ranking_metric,
        evaluation_version=head.evaluation_version,
        group_labels=sorted(labels) if shown is None else [g for g in shown if g in labels],
        entries=entries,
    )


FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value: object) -> str:
    """A CSV cell that spreadsheet programs will not run as a formula: leading = + - @ TAB CR get a quote."""
    text = "" if value is None else str(value)
    if text.startswith(FORMULA_PREFIXES):
        return "'" + text
    return text


def to_csv(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([csv_safe(h) for h in header])
    for row in rows:
        writer.writerow([csv_safe(v) for v in row])
    return buf.getvalue()


def leaderboard_csv(board: LeaderboardRead) -> str:
    header = [
        "rank",
        "rank_robustness",
        "team",
        "method",
        "paper_url",
        "baseline",
        "submitted_at",
        "score",
        "f1",
        "f1_ci_low",
        "f1_ci_high",
        "precision",
        "recall",
        "ap",
        "tp",
        "fp",
        "fn",
    ] + [f"f1[{label}]" for label in board.group_labels]
    rows = []
    for e in board.entries:
        rows.append(
            [
                e.rank,
                e.rank_robustness,
                e.team_name,
                e.method_name,
                e.paper_url,
                e.is_baseline,
                e.submitted_at.isoformat(),
                e.score,
                e.f1,
                e.f1_ci_low,
                e.f1_ci_high,
                e.precision,
                e.recall,
                e.ap,
                e.tp,
                e.fp,
                e.fn,
            ]
            + [e.groups.get(label, {}).get("f1") for label in board.group_labels]
        )
    return to_csv(header, rows)
