"""The leaderboard of a phase in ONE SQL statement (entry policy, ranking metric, ranks with shared ties all
computed in SQL with window functions), its CSV form, and ranking robustness by bootstrap.

Must not import FastAPI: the worker calls `recompute_rank_robustness` when a result lands.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import Row, and_, case, func, or_, select, true
from sqlalchemy.orm import Session

from app.challenges.service import scores_hidden_for
from app.errors import NotFound
from app.leaderboard.schemas import LeaderboardEntry, LeaderboardRead
from app.models import (
    Challenge,
    EntryPolicy,
    Evaluation,
    EvaluationStatus,
    Phase,
    RankingMetric,
    Result,
    Submission,
    Team,
    utcnow,
)
from app.submissions.service import filter_groups

EPS = 1e-6  # midog2022 formulas (evaluation spec section 4)


def _entries_subquery(phase_id: int, *, include_cases: bool = False) -> Any:
    score = case(
        (Phase.ranking_metric == RankingMetric.AP, Result.ap),
        (Phase.ranking_metric == RankingMetric.PRECISION, Result.precision),
        (Phase.ranking_metric == RankingMetric.RECALL, Result.recall),
        else_=Result.f1,
    )
    partition = (Submission.team_id, Submission.is_baseline)
    columns = [
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
        Phase.entry_policy.label("entry_policy"),
        score.label("score"),
        func.row_number()
        .over(partition_by=partition, order_by=(score.desc().nulls_last(), Submission.created_at, Submission.id))
        .label("rn_best"),
        func.row_number()
        .over(partition_by=partition, order_by=(Submission.created_at.desc(), Submission.id.desc()))
        .label("rn_latest"),
    ]
    if include_cases:
        columns.append(Result.cases)
    inner = (
        select(*columns)
        .join(Evaluation, Evaluation.id == Result.evaluation_id)
        .join(Submission, Submission.id == Result.submission_id)
        .join(Phase, Phase.id == Submission.phase_id)
        .join(Team, Team.id == Submission.team_id)
        .where(
            Submission.phase_id == phase_id,
            Result.evaluation_version == Phase.evaluation_version,
            Evaluation.status == EvaluationStatus.SUCCEEDED,
            Submission.is_hidden.is_(False),
            Submission.is_disqualified.is_(False),
            Team.is_disqualified.is_(False),
        )
        .subquery("candidates")
    )
    chosen = or_(
        and_(inner.c.entry_policy == EntryPolicy.BEST, inner.c.rn_best == 1),
        and_(inner.c.entry_policy == EntryPolicy.LATEST, inner.c.rn_latest == 1),
    )
    ranked = select(
        *[c for c in inner.c if c.name not in {"rn_best", "rn_latest", "entry_policy"}],
        case(
            (
                inner.c.is_baseline.is_(False),
                func.rank().over(partition_by=inner.c.is_baseline, order_by=inner.c.score.desc().nulls_last()),
            ),
            else_=None,
        ).label("rank"),
    ).where(chosen)
    return ranked.subquery("entries")


def leaderboard_statement(phase_id: int) -> Any:
    """One statement: the phase (and its challenge) left-joined to its ranked entries."""
    entries = _entries_subquery(phase_id)
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
            entries,
        )
        .select_from(Phase)
        .join(Challenge, Challenge.id == Phase.challenge_id)
        .outerjoin(entries, true())
        .where(Phase.id == phase_id)
        .order_by(entries.c.rank.is_(None), entries.c.rank, entries.c.score.desc(), entries.c.submitted_at)
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
    entries: list[LeaderboardEntry] = []
    labels: dict[str, None] = {}
    if visible:
        for row in rows:
            if row.result_id is None:
                continue
            groups = filter_groups(row.groups or {}, shown)
            labels.update(dict.fromkeys(groups))
            entries.append(
                LeaderboardEntry(
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


FloatArray = npt.NDArray[np.float64]


def _metric(counts: FloatArray, metric: str) -> FloatArray:
    """counts[0..2] = TP, FP, FN (any trailing shape) -> the metric with the midog2022 formulas."""
    tp, fp, fn = counts[0], counts[1], counts[2]
    if metric == RankingMetric.PRECISION:
        out = tp / (tp + fp + EPS)
    elif metric == RankingMetric.RECALL:
        out = tp / (tp + fn + EPS)
    else:
        out = (2 * tp + EPS) / (2 * tp + fp + fn + EPS)
    return np.asarray(out, dtype=np.float64)


def _competition_ranks(scores: FloatArray) -> npt.NDArray[np.int64]:
    """Rank 1 + number of strictly better entries, along the last axis (ties share a rank)."""
    better = scores[..., None, :] > scores[..., :, None]
    return np.asarray(1 + better.sum(axis=-1), dtype=np.int64)


def recompute_rank_robustness(
    session: Session, *, phase_id: int, resamples: int = 1000, seed: int = 0
) -> dict[int, float]:
    """For every ranked entry of the phase: the share of bootstrap resamples of the test cases (the same
    resampled cases for all entries) in which the entry keeps its rank. Scores are recomputed from the
    per-case TP/FP/FN with the midog2022 formulas; AP, which per-case counts cannot give, is ranked by F1.
    Writes Result.rank_robustness (flush only) and returns result id -> robustness."""
    entries = _entries_subquery(phase_id, include_cases=True)
    rows = session.execute(
        select(entries.c.result_id, entries.c.cases, entries.c.rank, Phase.ranking_metric)
        .join(Phase, Phase.id == phase_id)
        .where(entries.c.rank.is_not(None))
    ).all()
    if not rows:
        return {}
    metric = rows[0].ranking_metric
    names = sorted({name for row in rows for name in (row.cases or {})})
    index = {name: i for i, name in enumerate(names)}
    counts = np.zeros((3, len(rows), max(1, len(names))), dtype=np.float64)
    for e, row in enumerate(rows):
        for name, c in (row.cases or {}).items():
            counts[:, e, index[name]] = (c.get("tp", 0), c.get("fp", 0), c.get("fn", 0))
    n_cases = counts.shape[2]
    base = _competition_ranks(_metric(counts.sum(axis=2), metric))
    rng = np.random.default_rng(seed)
    kept = np.zeros(len(rows))
    batch = 100
    for start in range(0, resamples, batch):
        size = min(batch, resamples - start)
        picks = rng.integers(0, n_cases, size=(size, n_cases))
        weights = np.zeros((size, n_cases))
        np.add.at(weights, (np.arange(size)[:, None], picks), 1.0)
        sums = np.einsum("ken,sn->kse", counts, weights)  # (3, resamples, entries)
        ranks = _competition_ranks(_metric(sums, metric))
        kept += (ranks == base[None, :]).sum(axis=0)
    robustness = {int(row.result_id): float(k / resamples) for row, k in zip(rows, kept, strict=True)}
    for result in session.scalars(select(Result).where(Result.id.in_(robustness))):
        result.rank_robustness = robustness[result.id]
    session.flush()
    return robustness
