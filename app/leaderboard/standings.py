"""Standings: each phase's leaderboard, rendered into `leaderboard_snapshot` by the queued task
`standings.rebuild(phase_id=)`, so that the public board is served by one single-row SQL statement as stored.

Where a rebuild comes from: a writer that changes what a board shows asks app.lifecycle, which calls
`app.leaderboard.rebuilds.request_rebuild` inside its transaction (the board's `generation` grows; one
rebuild per phase is sent after commit). The worker's task calls `rebuild_phase`: it clears the queued mark,
reads the entries and computes the ranking robustness in a reading transaction (no write lock held), then
stores the board in a short write transaction, and only if no rebuild of a later generation stored first.
A rebuild that fails is logged; the reconciler rebuilds whatever is left stale (`rebuild_stale`). Nothing
is registered on import and no request thread runs this module's bootstrap.

The rebuild: entries chosen by the phase's policy (best or latest per team, baselines apart), ranked by its
metric (ties share a rank, "1, 1, 3"), and the ranking robustness of every ranked entry recomputed with the
scoring core's bootstrap for that metric under the phase's rules (resamples of cases shared across entries;
none for AP, which counts cannot reproduce).

Must not import FastAPI. `refresh_standings(session, phase_id=...)` rebuilds within the caller's transaction
(the CLI, tests).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import and_, case, func, insert, or_, select, update
from sqlalchemy.orm import Session

from app.scoring import canonical_options, public_provenance
from app.tables import (
    EntryPolicy,
    Evaluation,
    LeaderboardSnapshot,
    Phase,
    RankingMetric,
    Result,
    Submission,
    Team,
    TestSet,
    utcnow,
)
from worker.result_fields import METRIC_NAMES, RESULT_FIELDS

log = logging.getLogger(__name__)


def ranked_entries(phase_id: int) -> Any:
    """(result_id, score, rank, is_baseline) of the phase's entries under its policy and metric."""
    score = case(
        (Phase.ranking_metric == RankingMetric.AP, Result.ap),
        (Phase.ranking_metric == RankingMetric.PRECISION, Result.precision),
        (Phase.ranking_metric == RankingMetric.RECALL, Result.recall),
        (Phase.ranking_metric == RankingMetric.BALANCED_ACCURACY, Result.balanced_accuracy),
        (Phase.ranking_metric == RankingMetric.ROC_AUC, Result.roc_auc),
        else_=Result.f1,
    )
    partition = (Submission.team_id, Submission.is_baseline)
    candidates = (
        select(
            Result.id.label("result_id"),
            Submission.is_baseline,
            Submission.created_at,
            Phase.entry_policy.label("entry_policy"),
            score.label("score"),
            func.row_number()
            .over(partition_by=partition, order_by=(score.desc().nulls_last(), Submission.created_at, Submission.id))
            .label("rn_best"),
            func.row_number()
            .over(partition_by=partition, order_by=(Submission.created_at.desc(), Submission.id.desc()))
            .label("rn_latest"),
        )
        .join(Evaluation, Evaluation.id == Result.evaluation_id)
        .join(Submission, Submission.id == Result.submission_id)
        .join(Phase, Phase.id == Submission.phase_id)
        .join(Team, Team.id == Submission.team_id)
        .where(
            Submission.phase_id == phase_id,
            Result.evaluation_version == Phase.evaluation_version,
            # results scored differently (options, test set, scorer) are never ranked beside each other
            Result.scoring_fingerprint == Phase.scoring_fingerprint,
            Submission.is_hidden.is_(False),
            Submission.is_disqualified.is_(False),
            Team.is_disqualified.is_(False),
        )
        .subquery("candidates")
    )
    chosen = or_(
        and_(candidates.c.entry_policy == EntryPolicy.BEST, candidates.c.rn_best == 1),
        and_(candidates.c.entry_policy == EntryPolicy.LATEST, candidates.c.rn_latest == 1),
    )
    rank = case(
        (
            candidates.c.is_baseline.is_(False),
            func.rank().over(partition_by=candidates.c.is_baseline, order_by=candidates.c.score.desc().nulls_last()),
        ),
        else_=None,
    )
    return (
        select(candidates.c.result_id, candidates.c.score, rank.label("rank"), candidates.c.is_baseline)
        .where(chosen)
        .order_by(candidates.c.is_baseline, candidates.c.score.desc().nulls_last(), candidates.c.created_at)
    )


@dataclass
class Standings:
    """A phase's board as rendered from the data of one snapshot generation."""

    phase_id: int
    generation: int
    entries_json: str
    group_labels: list[str]
    entry_count: int
    robustness: dict[int, float | None] = field(default_factory=dict)
    analysis_json: str = "{}"


def compute_standings(
    session: Session, *, phase_id: int, resamples: int | None = None, seed: int | None = None
) -> Standings | None:
    """Render the phase's board from the database as it is now (reads only); None for a missing phase."""
    from app.leaderboard.schemas import LeaderboardEntry
    from app.settings import get_settings
    from app.submissions.service import filter_groups

    settings = get_settings()
    resamples = settings.robustness_resamples if resamples is None else resamples
    seed = settings.robustness_seed if seed is None else seed
    phase = session.execute(
        select(
            Phase.shown_groups, Phase.seen_groups, Phase.ranking_metric, Phase.scoring_options, Phase.test_set_id
        ).where(Phase.id == phase_id)
    ).first()
    if phase is None:
        return None
    generation = session.scalar(select(LeaderboardSnapshot.generation).where(LeaderboardSnapshot.phase_id == phase_id))
    ranked = session.execute(ranked_entries(phase_id)).all()
    ids = [r.result_id for r in ranked]
    details = (
        {
            row.Result.id: row
            for row in session.execute(
                select(
                    Result,
                    Submission.created_at,
                    Submission.team_id,
                    Submission.method_name,
                    Submission.paper_url,
                    Team.name,
                )
                .join(Submission, Submission.id == Result.submission_id)
                .join(Team, Team.id == Submission.team_id)
                .where(Result.id.in_(ids))
            )
        }
        if ids
        else {}
    )
    metric = str(phase.ranking_metric.value if hasattr(phase.ranking_metric, "value") else phase.ranking_metric)
    options = canonical_options(phase.scoring_options)
    robustness = _robustness(
        [r for r in ranked if r.rank is not None],
        details,
        metric=metric,
        rules=options["rules"],
        task=options["task"],
        resamples=resamples,
        seed=seed,
    )
    analysis = _analysis(
        session, phase, ranked, details, metric=metric, options=options, resamples=resamples, seed=seed
    )
    gaps = _gaps_by_result(analysis, ranked, details)
    entries: list[str] = []
    labels: dict[str, None] = {}
    for r in ranked:
        d = details[r.result_id]
        res = d.Result
        groups = filter_groups(res.groups or {}, phase.shown_groups)
        labels.update(dict.fromkeys(groups))
        entry = LeaderboardEntry(
            rank=r.rank,
            rank_robustness=robustness.get(res.id, res.rank_robustness) if r.rank is not None else None,
            team_id=d.team_id,
            team_name=d.name,
            submission_id=res.submission_id,
            method_name=d.method_name,
            paper_url=d.paper_url,
            is_baseline=r.is_baseline,
            submitted_at=d.created_at,
            score=r.score,
            **_score_interval(res, metric),
            **_entry_metrics(res),
            groups=groups,
            generalisation=gaps.get(res.id),
            scoring_fingerprint=res.scoring_fingerprint,
            provenance=public_provenance(res.provenance),
        )
        entries.append(entry.model_dump_json())
    shown_groups = phase.shown_groups
    group_labels = sorted(labels) if shown_groups is None else [g for g in shown_groups if g in labels]
    return Standings(
        phase_id=phase_id,
        generation=int(generation or 0),
        entries_json="[" + ",".join(entries) + "]",
        group_labels=group_labels,
        entry_count=len(entries),
        robustness=robustness,
        analysis_json=json.dumps(analysis, separators=(",", ":"), allow_nan=False),
    )


def _analysis(
    session: Session,
    phase: Any,
    ranked: Sequence[Any],
    details: dict[int, Any],
    *,
    metric: str,
    options: dict[str, Any],
    resamples: int,
    seed: int,
) -> dict[str, Any]:
    """The board's ranking analysis (app.leaderboard.analysis), or why there is none."""
    from app.leaderboard.analysis import AnalysisEntry, build_analysis, unavailable
    from app.settings import get_settings

    if options["task"] != "detection":
        return unavailable("the ranking analysis covers detection phases")
    if not ranked:
        return unavailable("no evaluated entry yet")
    cases = session.scalar(select(TestSet.cases).where(TestSet.id == phase.test_set_id)) or {}
    key = options["group_key"]
    case_groups = {name: str((case.get("groups") or {}).get(key)) for name, case in cases.items()}
    entries = [
        AnalysisEntry(
            submission_id=details[r.result_id].Result.submission_id,
            team_name=details[r.result_id].name,
            method_name=details[r.result_id].method_name,
            rank=r.rank,
            is_baseline=bool(r.is_baseline),
            cases=details[r.result_id].Result.cases or {},
        )
        for r in ranked
    ]
    doc = build_analysis(
        entries,
        case_groups,
        seen_groups=phase.seen_groups,
        shown_groups=phase.shown_groups,
        rules=options["rules"],
        resamples=resamples,
        seed=seed,
        max_entries=get_settings().analysis_max_entries,
    )
    if doc.get("available") and metric != "f1":
        doc["ranking"] = unavailable(f"the board ranks by {metric}; rank statistics are computed for F1")
        doc.pop("significance", None)
        doc.pop("rank_then_aggregate", None)
    return doc


def _gaps_by_result(analysis: dict[str, Any], ranked: Sequence[Any], details: dict[int, Any]) -> dict[int, Any]:
    """Result id -> its seen/unseen gap from the analysis (entries matched by submission id)."""
    rows = analysis.get("generalisation") or []
    heads = analysis.get("entries") or []
    by_submission = {head["submission_id"]: row for head, row in zip(heads, rows, strict=False)}
    return {
        r.result_id: by_submission[sid]
        for r in ranked
        if (sid := details[r.result_id].Result.submission_id) in by_submission
    }


def _entry_metrics(result: Result) -> dict[str, Any]:
    """The metric fields of a board entry (worker.result_fields), each shown interval beside its metric."""
    values: dict[str, Any] = {}
    for f in RESULT_FIELDS:
        values[f.name] = getattr(result, f.name)
        if f.board_interval:
            values[f"{f.name}_ci_low"], values[f"{f.name}_ci_high"] = _interval(result, f.name)
    return values


def _score_interval(result: Result, metric: str) -> dict[str, float | None]:
    """The 95% interval of the ranking metric: its own interval columns where the result has them (F1), the
    others from `intervals`."""
    low_column, high_column = f"{metric}_ci_low", f"{metric}_ci_high"
    if low_column in METRIC_NAMES and getattr(result, low_column) is not None:
        return {"score_ci_low": getattr(result, low_column), "score_ci_high": getattr(result, high_column)}
    low, high = _interval(result, metric)
    return {"score_ci_low": low, "score_ci_high": high}


def _interval(result: Result, metric: str) -> tuple[float | None, float | None]:
    low, high = ((result.intervals or {}).get(metric) or [None, None])[:2]
    return low, high


def _robustness(
    ranked: list[Any],
    details: dict[int, Any],
    *,
    metric: str,
    rules: str,
    task: str,
    resamples: int,
    seed: int,
) -> dict[int, float | None]:
    """The share of bootstrap resamples in which each ranked entry keeps its rank (None under AP and ROC AUC,
    which counts cannot reproduce). Classification resamples stacks, with their TN."""
    from worker.evaluation.bootstrap import CLASSIFICATION_COUNT_METRICS, COUNT_METRICS, rank_robustness
    from worker.evaluation.types import Rules

    usable = [r.result_id for r in ranked if details[r.result_id].Result.cases]
    if not usable:
        return {}
    keys = ("tp", "fp", "fn", "tn") if task == "classification" else ("tp", "fp", "fn")
    if metric not in (CLASSIFICATION_COUNT_METRICS if task == "classification" else COUNT_METRICS):
        return dict.fromkeys(usable)
    per_case = {rid: details[rid].Result.cases or {} for rid in usable}
    names = sorted({name for cases in per_case.values() for name in cases})
    index = {name: i for i, name in enumerate(names)}
    counts = np.zeros((len(usable), len(names), len(keys)), dtype=np.int64)
    for e, rid in enumerate(usable):
        for name, c in per_case[rid].items():
            counts[e, index[name]] = [c.get(key, 0) for key in keys]
    kept = rank_robustness(counts, resamples=resamples, seed=seed, rules=Rules(rules), metric=metric)
    return {rid: float(k) for rid, k in zip(usable, kept, strict=True)}


def store_standings(session: Session, standings: Standings) -> bool:
    """Store the rendered board unless a rebuild of a later generation got there first; True if stored."""
    values = {
        "entries_json": standings.entries_json,
        "group_labels": standings.group_labels,
        "entry_count": standings.entry_count,
        "analysis_json": standings.analysis_json,
        "built_generation": standings.generation,
        "updated_at": utcnow(),
    }
    stored = session.execute(
        update(LeaderboardSnapshot)
        .where(
            LeaderboardSnapshot.phase_id == standings.phase_id,
            LeaderboardSnapshot.built_generation <= standings.generation,
        )
        .values(**values)
    )
    if getattr(stored, "rowcount", 0) == 0:
        exists = session.scalar(
            select(LeaderboardSnapshot.phase_id).where(LeaderboardSnapshot.phase_id == standings.phase_id)
        )
        if exists is not None:
            return False
        first = {"phase_id": standings.phase_id, "generation": standings.generation}
        session.execute(insert(LeaderboardSnapshot).values(**first, **values))
    if standings.robustness:
        session.execute(update(Result), [{"id": rid, "rank_robustness": k} for rid, k in standings.robustness.items()])
    return True


def refresh_standings(session: Session, *, phase_id: int, resamples: int | None = None, seed: int | None = None) -> int:
    """Rebuild the phase's board within the caller's transaction (the CLI, tests); the number of entries."""
    standings = compute_standings(session, phase_id=phase_id, resamples=resamples, seed=seed)
    if standings is None:
        return 0
    store_standings(session, standings)
    return standings.entry_count


def rebuild_phase(bind: Any, phase_id: int) -> bool:
    """The task `standings.rebuild`: clear the queued mark, render the board in a reading transaction, store
    it in a short writing one. True when stored (False: the phase is gone, or a later rebuild stored first)."""
    from sqlalchemy import Connection

    from app.db import WRITE_INTENT
    from app.leaderboard.rebuilds import take_mark

    shared = isinstance(bind, Connection)  # tests: one connection, its transaction shared through savepoints
    mode: Any = {"join_transaction_mode": "create_savepoint"} if shared else {}
    writer = bind if shared else bind.execution_options(**{WRITE_INTENT: True})
    reader = bind if shared else bind.execution_options(**{WRITE_INTENT: False})
    with Session(bind=writer, **mode) as session:
        take_mark(session, phase_id)  # changes committed from now on queue another rebuild
        session.commit()
    with Session(bind=reader, **mode) as session:
        standings = compute_standings(session, phase_id=phase_id)
        session.rollback()
    if standings is None:
        return False
    with Session(bind=writer, **mode) as session:
        stored = store_standings(session, standings)
        session.commit()
    return stored


def rebuild_stale(bind: Any) -> list[int]:
    """The reconciler's backstop: rebuild every board older than its data (a rebuild lost or failed)."""
    with Session(bind=bind) as session:
        phases = stale_phases(session)
    for phase_id in phases:
        try:
            rebuild_phase(bind, phase_id)
        except Exception:  # one broken board must not keep the others stale
            log.exception("standings of phase %s not rebuilt; tried again at the next reconcile", phase_id)
    return phases


def stale_phases(session: Session) -> list[int]:
    """Phases whose stored board is older than their data (a rebuild that never ran)."""
    stale = LeaderboardSnapshot.built_generation < LeaderboardSnapshot.generation
    return list(session.scalars(select(LeaderboardSnapshot.phase_id).where(stale)))
