"""Landing one result on a board of 10,000 submissions over 200 teams: how long the write transaction lasts.

The write transaction of a landing result is the time from its BEGIN to its COMMIT on the database connection
(SQLAlchemy connection events). Two ways of landing it, measured in the same run on the same board:
1. baseline, the former design: the board rebuilt inside the landing transaction (what the commit hook did);
2. now: the landing transaction only bumps the board's generation; the board is rebuilt after the commit
   (its time is reported beside, outside any write transaction).
Each is repeated with a fresh evaluation; the medians are printed with their ratio. Target: <= 50 ms.

    .venv/bin/python bench/standings.py [--database-url URL] [--teams 200] [--submissions 10000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

SCORES = {"tp": 90, "fp": 20, "fn": 25, "precision": 0.82, "recall": 0.78, "f1": 0.8, "ap": 0.75, "groups": {}}


def running_evaluation(factory: Any, phase_id: int, index: int, case_names: list[str]) -> int:
    """A new team's submission whose evaluation a worker holds (running, leased): ready to succeed."""
    from app.db import session_scope
    from app.models import Evaluation, EvaluationStatus, Submission, Team, utcnow

    with session_scope(factory) as session:
        team = Team(name=f"bench-late-{index}", contact_email="late@example.org", is_approved=True)
        submission = Submission(
            phase_id=phase_id, team=team, kind="predictions", file_path="x", sha256="0" * 64, size_bytes=1
        )
        evaluation = Evaluation(
            submission=submission,
            version=1,
            status=EvaluationStatus.RUNNING,
            attempt=1,
            lease_owner="bench:1",
            lease_expires_at=utcnow(),
        )
        session.add(evaluation)
        session.flush()
        return int(evaluation.id)


def land(
    factory: Any, engine: Any, evaluation_id: int, *, rebuild_inside: bool, phase_id: int, cases: dict[str, Any]
) -> tuple[float, float]:
    """(seconds of the landing's write transaction, seconds of the whole landing including the rebuild)."""
    from api import BENCH_DIGEST, PROVENANCE
    from sqlalchemy import event

    from app import lifecycle as transitions
    from app.leaderboard.standings import _REFRESHING, refresh_standings
    from app.scoring import fingerprint

    marks: dict[str, float] = {}

    def began(conn: Any) -> None:
        marks.setdefault("begin", time.perf_counter())

    def committed(conn: Any) -> None:
        marks.setdefault("commit", time.perf_counter())

    event.listen(engine, "begin", began)
    event.listen(engine, "commit", committed)
    started = time.perf_counter()
    try:
        session = factory()
        try:
            if rebuild_inside:
                session.info[_REFRESHING] = True  # no after-commit rebuild: it happens below, inside
            scores = {
                **SCORES,
                "cases": cases,
                "scoring_fingerprint": fingerprint({}, BENCH_DIGEST),
                "provenance": PROVENANCE,
            }
            assert transitions.succeed(session, evaluation_id=evaluation_id, owner="bench:1", attempt=1, scores=scores)
            if rebuild_inside:
                refresh_standings(session, phase_id=phase_id)
            session.commit()
        finally:
            session.close()
    finally:
        event.remove(engine, "begin", began)
        event.remove(engine, "commit", committed)
    return marks["commit"] - marks["begin"], time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default="")
    parser.add_argument("--teams", type=int, default=200)
    parser.add_argument("--submissions", type=int, default=10_000)
    parser.add_argument("--cases", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    url = args.database_url or f"sqlite:///{tempfile.mkdtemp(prefix='midog-bench-standings-')}/bench.sqlite3"
    from api import seed  # bench/api.py: the same 10,000-submission board

    from app.db import make_engine, make_session_factory

    phase_id = seed(url, teams=args.teams, submissions=args.submissions, cases=args.cases, rng=random.Random(0))
    engine = make_engine(url)
    factory = make_session_factory(engine, write=True)
    cases = {f"{i:03d}.tiff": {"tp": 2, "fp": 1, "fn": 1} for i in range(args.cases)}
    names = list(cases)
    rows = []
    for label, inside in (
        ("baseline: board rebuilt inside the landing transaction", True),
        ("now: rebuilt after the commit", False),
    ):
        txn, whole = [], []
        for r in range(args.repeats):
            evaluation_id = running_evaluation(factory, phase_id, len(rows) * 100 + r, names)
            t, w = land(factory, engine, evaluation_id, rebuild_inside=inside, phase_id=phase_id, cases=cases)
            txn.append(t)
            whole.append(w)
        rows.append((label, statistics.median(txn), statistics.median(whole)))
    backend = engine.dialect.name
    engine.dispose()
    print(f"\n{args.submissions} submissions, {args.teams} teams, {backend}; medians of {args.repeats}")
    print(f"{'landing one result':<58} {'write txn ms':>12} {'with rebuild ms':>16}")
    for label, t, w in rows:
        print(f"{label:<58} {t * 1000:>12.1f} {w * 1000:>16.1f}")
    print(f"write transaction, now / baseline: {rows[1][1] / rows[0][1]:.3f}")


if __name__ == "__main__":
    main()
