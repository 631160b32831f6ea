"""Standings: each phase's leaderboard, rendered into `leaderboard_snapshot` in the same transaction as
whatever changed it, so that the public board is served by one single-row SQL statement as stored.

What rebuilds a phase's standings (Session event hooks, installed on import of app.db):
- a Result inserted, updated or deleted, through the ORM or an `insert(Result)` statement (the worker);
- a Submission whose is_hidden / is_disqualified / is_baseline changed; a Team whose is_disqualified changed;
- a Phase whose entry_policy / ranking_metric / evaluation_version / shown_groups changed.
The rebuild runs in `before_commit` and stores the rendered board (leaderboard_snapshot): entries are chosen
by the phase's policy (best or latest per team, baselines apart), ranked by its metric (ties share a rank,
"1, 1, 3"), and the ranking robustness of every ranked entry is recomputed with the scoring core's
bootstrap (resamples of cases shared across entries).

Must not import FastAPI. `refresh_standings(session, phase_id=...)` can also be called directly.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import numpy as np
from sqlalchemy import and_, case, event, func, insert, inspect, or_, select, update
from sqlalchemy.orm import ORMExecuteState, Session, UOWTransaction

from app.models import (
    EntryPolicy,
    Evaluation,
    LeaderboardSnapshot,
    Phase,
    RankingMetric,
    Result,
    Submission,
    Team,
    utcnow,
)

log = logging.getLogger(__name__)

_DIRTY_SUBMISSIONS = "midog_standings_dirty_submissions"
_DIRTY_PHASES = "midog_standings_dirty_phases"
_DIRTY_TEAMS = "midog_standings_dirty_teams"
_REFRESHING = "midog_standings_refreshing"


def ranked_entries(phase_id: int) -> Any:
    """(result_id, score, rank, is_baseline) of the phase's entries under its policy and metric."""
    score = case(
        (Phase.ranking_metric == RankingMetric.AP, Result.ap),
        (Phase.ranking_metric == RankingMetric.PRECISION, Result.precision),
        (Phase.ranking_metric == RankingMetric.RECALL, Result.recall),
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


def refresh_standings(session: Session, *, phase_id: int, resamples: int | None = None, seed: int | None = None) -> int:
    """Rebuild the phase's leaderboard snapshot and the robustness of its ranked results (flush only);
    returns the number of entries. Serialised per phase by a row lock on PostgreSQL (SQLite: one writer)."""
    from app.leaderboard.schemas import LeaderboardEntry
    from app.settings import get_settings
    from app.submissions.service import filter_groups
    from worker.evaluation.bootstrap import rank_robustness

    settings = get_settings()
    resamples = settings.robustness_resamples if resamples is None else resamples
    seed = settings.robustness_seed if seed is None else seed
    session.info[_REFRESHING] = True
    try:
        shown = session.execute(select(Phase.shown_groups).where(Phase.id == phase_id).with_for_update()).first()
        if shown is None:
            return 0
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
        robustness: dict[int, float] = {}
        # robustness needs per-case counts; results without them keep what they had
        ranked_ids = [r.result_id for r in ranked if r.rank is not None and details[r.result_id].Result.cases]
        if ranked_ids:
            per_case = {rid: details[rid].Result.cases or {} for rid in ranked_ids}
            names = sorted({name for cases in per_case.values() for name in cases})
            index = {name: i for i, name in enumerate(names)}
            counts = np.zeros((len(ranked_ids), len(names), 3), dtype=np.int64)
            for e, rid in enumerate(ranked_ids):
                for name, c in per_case[rid].items():
                    counts[e, index[name]] = (c.get("tp", 0), c.get("fp", 0), c.get("fn", 0))
            kept = rank_robustness(counts, resamples=resamples, seed=seed)
            robustness = {rid: float(k) for rid, k in zip(ranked_ids, kept, strict=True)}
            session.execute(update(Result), [{"id": rid, "rank_robustness": k} for rid, k in robustness.items()])
        entries: list[str] = []
        labels: dict[str, None] = {}
        for r in ranked:
            d = details[r.result_id]
            res = d.Result
            groups = filter_groups(res.groups or {}, shown.shown_groups)
            labels.update(dict.fromkeys(groups))
            entry = LeaderboardEntry(
                rank=r.rank,
                rank_robustness=robustness.get(res.id, res.rank_robustness),
                team_id=d.team_id,
                team_name=d.name,
                submission_id=res.submission_id,
                method_name=d.method_name,
                paper_url=d.paper_url,
                is_baseline=r.is_baseline,
                submitted_at=d.created_at,
                score=r.score,
                tp=res.tp,
                fp=res.fp,
                fn=res.fn,
                precision=res.precision,
                recall=res.recall,
                f1=res.f1,
                ap=res.ap,
                f1_ci_low=res.f1_ci_low,
                f1_ci_high=res.f1_ci_high,
                groups=groups,
            )
            entries.append(entry.model_dump_json())
        shown_groups = shown.shown_groups
        group_labels = sorted(labels) if shown_groups is None else [g for g in shown_groups if g in labels]
        values = {
            "entries_json": "[" + ",".join(entries) + "]",
            "group_labels": group_labels,
            "entry_count": len(entries),
            "updated_at": utcnow(),
        }
        updated = session.execute(
            update(LeaderboardSnapshot).where(LeaderboardSnapshot.phase_id == phase_id).values(**values)
        )
        if getattr(updated, "rowcount", 0) == 0:
            session.execute(insert(LeaderboardSnapshot).values(phase_id=phase_id, **values))
        return len(entries)
    finally:
        session.info.pop(_REFRESHING, None)


def mark_phase_dirty(session: Session, phase_id: int) -> None:
    """Have the phase's standings rebuilt when this session commits."""
    session.info.setdefault(_DIRTY_PHASES, set()).add(phase_id)


def _changed(obj: object, *attributes: str) -> bool:
    state = inspect(obj)
    return any(state.attrs[a].history.has_changes() for a in attributes)


def _after_flush(session: Session, _flush: UOWTransaction) -> None:
    if session.info.get(_REFRESHING):
        return
    for obj in (*session.new, *session.dirty, *session.deleted):
        if isinstance(obj, Result):
            if obj.submission_id is not None:
                session.info.setdefault(_DIRTY_SUBMISSIONS, set()).add(obj.submission_id)
        elif obj not in session.dirty:
            continue
        elif isinstance(obj, Submission) and _changed(obj, "is_hidden", "is_disqualified", "is_baseline"):
            mark_phase_dirty(session, obj.phase_id)
        elif isinstance(obj, Team) and _changed(obj, "is_disqualified"):
            session.info.setdefault(_DIRTY_TEAMS, set()).add(obj.id)
        elif isinstance(obj, Phase) and _changed(
            obj, "entry_policy", "ranking_metric", "evaluation_version", "shown_groups"
        ):
            mark_phase_dirty(session, obj.id)


def _do_orm_execute(state: ORMExecuteState) -> None:
    """Catch `insert(Result)` / `update(Result)` statements (the worker writes results this way)."""
    session = state.session
    if session.info.get(_REFRESHING) or not (state.is_insert or state.is_update or state.is_delete):
        return
    mapper = state.bind_mapper
    if mapper is None or mapper.class_ is not Result:
        return
    submission_ids: set[int] = set()
    try:
        statement: Any = state.statement
        params = statement.compile(dialect=session.get_bind().dialect).params
        if isinstance(params.get("submission_id"), int):
            submission_ids.add(params["submission_id"])
        for value in _flatten(state.parameters):
            if isinstance(value, dict) and isinstance(value.get("submission_id"), int):
                submission_ids.add(value["submission_id"])
    except Exception:  # never break the caller's write
        log.warning("standings: could not tell which submission a Result statement touched", exc_info=True)
    if not submission_ids:
        session.info["midog_standings_all"] = True
    session.info.setdefault(_DIRTY_SUBMISSIONS, set()).update(submission_ids)


def _flatten(parameters: Any) -> Iterable[Any]:
    if isinstance(parameters, list | tuple):
        return parameters
    return [parameters] if parameters else []


def _before_commit(session: Session) -> None:
    if session.info.get(_REFRESHING):
        return
    session.flush()  # pending ORM changes mark what they touch (after_flush) before the marks are read
    phases: set[int] = set(session.info.pop(_DIRTY_PHASES, set()))
    submissions: set[int] = session.info.pop(_DIRTY_SUBMISSIONS, set())
    teams: set[int] = session.info.pop(_DIRTY_TEAMS, set())
    if session.info.pop("midog_standings_all", False):
        # a Result statement whose submission could not be read: rebuild every phase with results
        phases.update(session.scalars(select(Submission.phase_id).join(Result).distinct()).all())
    if not (phases or submissions or teams):
        return
    if submissions:
        phases.update(
            session.scalars(select(Submission.phase_id).where(Submission.id.in_(submissions)).distinct()).all()
        )
    if teams:
        phases.update(
            session.scalars(select(Submission.phase_id).where(Submission.team_id.in_(teams)).distinct()).all()
        )
    for phase_id in sorted(phases):
        refresh_standings(session, phase_id=phase_id)


def _after_rollback(session: Session) -> None:
    for key in (_DIRTY_PHASES, _DIRTY_SUBMISSIONS, _DIRTY_TEAMS, "midog_standings_all"):
        session.info.pop(key, None)


_installed = False


def install_hooks() -> None:
    """Register the Session events (idempotent; done on import of app.db)."""
    global _installed
    if _installed:
        return
    event.listen(Session, "after_flush", _after_flush)
    event.listen(Session, "do_orm_execute", _do_orm_execute)
    event.listen(Session, "before_commit", _before_commit)
    event.listen(Session, "after_rollback", _after_rollback)
    _installed = True
