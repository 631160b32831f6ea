"""The public leaderboard of a phase in ONE SQL statement (read from the standings that
app.leaderboard.standings keeps current) and its CSV form (formula-injection safe). Must not import FastAPI.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.challenges.service import scores_hidden_for
from app.errors import NotFound
from app.leaderboard.schemas import LeaderboardRead
from app.scoring import canonical_options
from app.tables import Challenge, LeaderboardSnapshot, Phase, utcnow
from worker.result_fields import BOARD_CSV_LEADING, board_csv_trailing


def leaderboard_statement(phase_id: int) -> Any:
    """One statement: the phase, its challenge and its stored board (kept current by
    app.leaderboard.standings)."""
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
            Phase.scoring_fingerprint,
            Phase.scoring_options,
            Challenge.slug.label("challenge_slug"),
            Challenge.is_published,
            LeaderboardSnapshot.entries_json,
            LeaderboardSnapshot.group_labels,
        )
        .join(Challenge, Challenge.id == Phase.challenge_id)
        .outerjoin(LeaderboardSnapshot, LeaderboardSnapshot.phase_id == Phase.id)
        .where(Phase.id == phase_id)
    )


def _visible_row(session: Session, statement: Any, phase_id: int, as_organiser: bool) -> tuple[Any, bool]:
    """The statement's row and whether its scores may be shown; NotFound for a missing or unpublished phase."""
    row = session.execute(statement).first()
    if row is None or (not row.is_published and not as_organiser):
        raise NotFound(f"no phase {phase_id}")
    return row, as_organiser or not scores_hidden_for(row.leaderboard_visibility, row.closes_at, utcnow())


def get_leaderboard_json(session: Session, *, phase_id: int, as_organiser: bool = False) -> bytes:
    """The leaderboard as JSON (the LeaderboardRead shape) with one SQL statement; the stored entries are
    spliced in as they are. Hidden scores are never put in the response (U7)."""
    row, visible = _visible_row(session, leaderboard_statement(phase_id), phase_id, as_organiser)
    task = canonical_options(row.scoring_options)["task"]
    head = {
        "challenge_slug": row.challenge_slug,
        "phase_id": row.phase_id,
        "phase_slug": row.phase_slug,
        "phase_title": row.phase_title,
        "visibility": row.leaderboard_visibility.value,
        "scores_visible": visible,
        "entry_policy": row.entry_policy.value,
        "ranking_metric": row.ranking_metric.value,
        "evaluation_version": row.evaluation_version,
        "task": task,
        "group_metric": "balanced_accuracy" if task == "classification" else "f1",
        "scoring_fingerprint": row.scoring_fingerprint,
        "group_labels": (row.group_labels or []) if visible else [],
    }
    entries = (row.entries_json or "[]") if visible else "[]"
    return (json.dumps(head, separators=(",", ":"))[:-1] + ',"entries":' + entries + "}").encode()


def get_analysis_json(session: Session, *, phase_id: int, as_organiser: bool = False) -> bytes:
    """The phase's stored ranking analysis (app.leaderboard.analysis) with its phase head, one SQL statement;
    while the phase hides its scores, only the head and `"available": false`."""
    statement = leaderboard_statement(phase_id).with_only_columns(
        Phase.id.label("phase_id"),
        Phase.title.label("phase_title"),
        Phase.leaderboard_visibility,
        Phase.closes_at,
        Challenge.slug.label("challenge_slug"),
        Challenge.is_published,
        LeaderboardSnapshot.analysis_json,
        LeaderboardSnapshot.updated_at,
    )
    row, visible = _visible_row(session, statement, phase_id, as_organiser)
    head = {
        "challenge_slug": row.challenge_slug,
        "phase_id": row.phase_id,
        "phase_title": row.phase_title,
        "scores_visible": visible,
        "updated_at": row.updated_at.isoformat() if row.updated_at is not None else None,
    }
    if not visible:
        body = json.dumps({"available": False, "reason": "the phase hides its scores"})
    else:
        body = row.analysis_json or "{}"
        if body == "{}":
            body = json.dumps({"available": False, "reason": "no evaluated entry yet"})
    return (json.dumps(head, separators=(",", ":"))[:-1] + ',"analysis":' + body + "}").encode()


def get_leaderboard(session: Session, *, phase_id: int, as_organiser: bool = False) -> LeaderboardRead:
    """The leaderboard as a model (pages, CSV); same single statement as the JSON form."""
    return LeaderboardRead.model_validate_json(
        get_leaderboard_json(session, phase_id=phase_id, as_organiser=as_organiser)
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


PROVENANCE_HEADER = ("scorer_version", "test_set_digest", "submission_sha256")


def leaderboard_csv(board: LeaderboardRead) -> str:
    """The board as CSV: who and the ranking score, the headline metrics (BOARD_CSV_LEADING), the fingerprint
    and provenance, every other metric of worker.result_fields, then the group metric per shown group."""
    trailing = board_csv_trailing()
    header = [
        "rank",
        "rank_robustness",
        "team",
        "method",
        "paper_url",
        "baseline",
        "submitted_at",
        "score",
        "score_ci_low",
        "score_ci_high",
        *BOARD_CSV_LEADING,
        "scoring_fingerprint",
        *PROVENANCE_HEADER,
        *trailing,
    ] + [f"{board.group_metric}[{label}]" for label in board.group_labels]
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
                e.score_ci_low,
                e.score_ci_high,
                *(getattr(e, name) for name in BOARD_CSV_LEADING),
                e.scoring_fingerprint,
                *provenance_columns(e.provenance),
                *(getattr(e, name) for name in trailing),
            ]
            + [e.groups.get(label, {}).get(board.group_metric) for label in board.group_labels]
        )
    return to_csv(header, rows)


def provenance_columns(provenance: dict[str, Any] | None) -> list[object]:
    """scorer_version, test_set_digest, submission_sha256 of a result's provenance (empty where unrecorded)."""
    p = provenance or {}
    return [
        p.get("scorer_version"),
        (p.get("test_set") or {}).get("scoring_digest"),
        (p.get("submission") or {}).get("sha256"),
    ]
