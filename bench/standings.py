"""Landing one result on a board of 10,000 submissions over 200 teams, and serving a board while it rebuilds.

1. The write transaction of a landing result (app.lifecycle.succeed: the result, the board's generation, the
   rebuild request) is the time from its BEGIN to its COMMIT on the database connection (SQLAlchemy connection
   events). Measured beside the former design on the same board: the board rebuilt inside the landing
   transaction. The rebuild task that follows (`standings.rebuild`) is timed apart, outside any request.
   Target: the landing transaction under 50 ms.
2. Request latency while a board of 200 entries x 500 cases rebuilds off the request path: the rebuild runs in
   another process (as the cpu worker runs it) while this one serves GET /api/v1/phases/<id>/leaderboard
   through the API app (SQLite, the embedded default); latencies with no rebuild running are printed beside.

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
    from app.tables import Evaluation, EvaluationStatus, Submission, Team, utcnow

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

    from app import lifecycle
    from app.leaderboard.standings import refresh_standings
    from app.queue import task_sender
    from app.scoring import fingerprint

    marks: dict[str, float] = {}

    def began(conn: Any) -> None:
        marks.setdefault("begin", time.perf_counter())

    def committed(conn: Any) -> None:
        marks.setdefault("commit", time.perf_counter())

    event.listen(engine, "begin", began)
    event.listen(engine, "commit", committed)
    started = time.perf_counter()
    sent: list[Any] = []
    try:
        session = factory()
        try:
            scores = {
                **SCORES,
                "cases": cases,
                "scoring_fingerprint": fingerprint({}, BENCH_DIGEST),
                "provenance": PROVENANCE,
            }
            with task_sender(lambda *task: sent.append(task)):  # no broker: the rebuild request is recorded
                assert lifecycle.succeed(
                    session, evaluation_id=evaluation_id, owner="bench:1", attempt=1, scores=scores
                )
                if rebuild_inside:
                    refresh_standings(session, phase_id=phase_id)
                session.commit()
        finally:
            session.close()
        if not rebuild_inside:
            from app.leaderboard.standings import rebuild_phase

            rebuild_phase(engine, phase_id)  # what the queued task does, after the commit
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
    parser.add_argument("--requests", type=int, default=200, help="Board requests timed with no rebuild running.")
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
        ("former: board rebuilt inside the landing transaction", True),
        ("now: lifecycle.succeed; standings.rebuild task after", False),
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
    print(f"write transaction, now / former: {rows[1][1] / rows[0][1]:.3f}")
    serve_while_rebuilding(teams=200, cases=500, requests=args.requests)


def _rebuild_in_another_process(url: str, phase_id: int) -> None:
    from app.db import make_engine
    from app.leaderboard.rebuilds import mark_stale
    from app.leaderboard.standings import rebuild_phase

    engine = make_engine(url)
    with engine.begin() as connection:  # a new generation: the rebuild must render the whole board again
        from sqlalchemy.orm import Session

        with Session(bind=connection) as session:
            mark_stale(session, [phase_id])
            session.commit()
    started = time.perf_counter()
    rebuild_phase(engine, phase_id)
    print(f"rebuild of the board in the worker process: {(time.perf_counter() - started) * 1000:.0f} ms", flush=True)
    engine.dispose()


def serve_while_rebuilding(*, teams: int, cases: int, requests: int) -> None:
    """GET the board through the API app while another process rebuilds it; latencies idle and meanwhile."""
    import multiprocessing

    from api import seed
    from fastapi.testclient import TestClient

    from app.leaderboard.standings import rebuild_phase
    from app.main import create_app
    from app.settings import Settings

    data_dir = Path(tempfile.mkdtemp(prefix="midog-bench-serve-"))
    url = f"sqlite:///{data_dir}/bench.sqlite3"  # the embedded default: one writer at a time
    phase_id = seed(url, teams=teams, submissions=teams, cases=cases, rng=random.Random(1))
    from app.db import make_engine

    engine = make_engine(url)
    rebuild_phase(engine, phase_id)  # the board exists before the measurement
    engine.dispose()
    settings = Settings(data_dir=data_dir, database_url=url, redis_url=None, broker_url="")
    path = f"/api/v1/phases/{phase_id}/leaderboard"

    def latencies(client: TestClient, until: Any) -> list[float]:
        times = []
        while until(len(times)):
            t = time.perf_counter()
            r = client.get(path)
            times.append(time.perf_counter() - t)
            assert r.status_code == 200, r.text
        return times

    with TestClient(create_app(settings)) as client:
        idle = latencies(client, lambda n: n < requests)
        worker = multiprocessing.get_context("spawn").Process(target=_rebuild_in_another_process, args=(url, phase_id))
        worker.start()
        during = latencies(client, lambda n: worker.is_alive())
        worker.join()
        board = client.get(path).json()
    print(f"\nboard of {len(board['entries'])} entries x {cases} cases ({engine.dialect.name}): GET {path}")
    for label, times in (("no rebuild running", idle), ("while it rebuilds", during)):
        ms = sorted(t * 1000 for t in times) or [float("nan")]
        median, p99 = ms[len(ms) // 2], ms[min(len(ms) - 1, int(0.99 * len(ms)))]
        print(f"{label:<22} requests {len(times):>5}  median {median:6.1f} ms  p99 {p99:6.1f} ms  max {ms[-1]:6.1f} ms")


if __name__ == "__main__":
    main()
