"""Leaderboard API under load: 10,000 submissions over 200 teams in one phase, served by uvicorn on loopback.

Measures, in one run and against the same server process:
1. a trivial endpoint of the same app (/api/v1/health, no database) and the leaderboard JSON, each driven
   by a closed loop of concurrent httpx clients for a fixed number of requests: throughput and latency;
2. the leaderboard at a fixed offered rate (default 200 requests/s, open loop) for a fixed time: p50/p99;
3. the number of SQL statements one leaderboard request runs (in-process, counted with an engine event).
Target (docs/performance.md, Service): >= 200 requests/s with p99 < 50 ms; reported as a ratio against
the trivial endpoint. Every loop is bounded in requests and time and talks to 127.0.0.1 only.

    .venv/bin/python bench/api.py [--database-url URL] [--teams 200] [--submissions 10000]
        [--concurrency 8] [--requests 2000] [--rate 200] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

SCANNERS = ("Hamamatsu XR", "Hamamatsu S360", "Aperio CS2", "Leica GT450")
BENCH_DIGEST = "b" * 64  # the seeded test set has no files: its scoring digest only has to be stable
# A result's provenance as a worker records it (about the size of a real one).
PROVENANCE = {
    "recorded": True,
    "scorer_version": "1",
    "software": {"midog_eval": "0.1.0", "python": "3.11.2"},
    "scoring_options": {"rules": "midog2022", "bootstrap": 1000, "seed": 0, "group_key": "scanner"},
    "scoring_options_sha256": "c" * 64,
    "test_set": {"id": 1, "name": "bench", "scoring_digest": BENCH_DIGEST},
    "submission": {"kind": "predictions", "sha256": "0" * 64, "size_bytes": 1},
    "runtime": {"worker": "bench:1", "started_at": "2026-11-30T00:00:00+00:00", "scoring_seconds": 0.2},
}


def seed(url: str, *, teams: int, submissions: int, cases: int, rng: random.Random) -> int:
    """Migrate `url` and fill one phase; returns the phase id. Bulk core inserts keep this to seconds."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import insert

    from app.db import make_engine
    from app.scoring import fingerprint
    from app.tables import Challenge, Evaluation, Phase, Result, Submission, Team, TestSet

    cfg = Config(str(REPO_ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(REPO_ROOT / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(cfg, "head")
    engine = make_engine(url)
    now = datetime.now(UTC)
    case_names = [f"{i:03d}.tiff" for i in range(cases)]
    with engine.begin() as conn:
        ts = conn.execute(
            insert(TestSet).returning(TestSet.id),
            [
                {
                    "name": "bench",
                    "manifest_path": "/bench/manifest.json",
                    "manifest_sha256": "0" * 64,
                    "scoring_digest": BENCH_DIGEST,
                    "case_count": cases,
                    "cases": {
                        n: {
                            "width": 7215,
                            "height": 5412,
                            "spacing_mm": 0.00025,
                            "groups": {"scanner": SCANNERS[i % 4]},
                        }
                        for i, n in enumerate(case_names)
                    },
                    "created_at": now,
                    "updated_at": now,
                }
            ],
        ).scalar_one()
        ch = conn.execute(
            insert(Challenge).returning(Challenge.id),
            [
                {
                    "slug": "bench",
                    "title": "Bench",
                    "description": "",
                    "is_published": True,
                    "requires_approval": False,
                    "created_at": now,
                    "updated_at": now,
                }
            ],
        ).scalar_one()
        phase = conn.execute(
            insert(Phase).returning(Phase.id),
            [
                {
                    "challenge_id": ch,
                    "slug": "prelim",
                    "title": "Preliminary",
                    "kind": "preliminary",
                    "allowed_kinds": ["predictions"],
                    "test_set_id": ts,
                    "daily_quota": 5,
                    "phase_quota": None,
                    "failed_count_towards_quota": True,
                    "max_active_per_team": 1,
                    "leaderboard_visibility": "public",
                    "shown_groups": None,
                    "entry_policy": "best",
                    "ranking_metric": "f1",
                    "parent_phase_id": None,
                    "time_limit_s": 3600.0,
                    "memory_limit_mb": 16384,
                    "evaluation_version": 1,
                    "scoring_options": {},
                    "scoring_fingerprint": fingerprint({}, BENCH_DIGEST),
                    "opens_at": now - timedelta(days=1),
                    "closes_at": now + timedelta(days=9),
                    "created_at": now,
                    "updated_at": now,
                }
            ],
        ).scalar_one()
        team_ids = (
            conn.execute(
                insert(Team).returning(Team.id),
                [
                    {
                        "name": f"team-{t:03d}",
                        "contact_email": f"t{t}@example.org",
                        "is_approved": True,
                        "is_disqualified": False,
                        "created_at": now,
                        "updated_at": now,
                    }
                    for t in range(teams)
                ],
            )
            .scalars()
            .all()
        )
        subs = []
        for i in range(submissions):
            created = now - timedelta(minutes=submissions - i)
            subs.append(
                {
                    "phase_id": phase,
                    "team_id": team_ids[i % teams],
                    "participant_id": None,
                    "kind": "predictions",
                    "file_path": f"bench/{i}.json",
                    "original_filename": "p.json",
                    "sha256": "0" * 64,
                    "size_bytes": 1000,
                    "method_name": f"method {i}",
                    "description": "",
                    "paper_url": "",
                    "is_baseline": False,
                    "is_hidden": False,
                    "is_disqualified": False,
                    "created_at": created,
                    "updated_at": created,
                }
            )
        sub_ids = conn.execute(insert(Submission).returning(Submission.id), subs).scalars().all()
        evs = [
            {
                "submission_id": s,
                "version": 1,
                "status": "succeeded",
                "attempt": 1,
                "queued_at": now,
                "started_at": now,
                "finished_at": now,
                "progress": 1.0,
                "progress_message": "done",
                "error_message": "",
                "error_detail": "",
                "gpu_seconds": 0.0,
                "created_at": now,
                "updated_at": now,
            }
            for s in sub_ids
        ]
        ev_ids = conn.execute(insert(Evaluation).returning(Evaluation.id), evs).scalars().all()
        results = []
        for s, e in zip(sub_ids, ev_ids, strict=True):
            tp, fp, fn = rng.randint(50, 150), rng.randint(0, 80), rng.randint(0, 80)
            f1 = round((2 * tp) / (2 * tp + fp + fn), 3)  # rounded: ties happen, as on real boards
            groups = {
                sc: {
                    "tp": tp // 4,
                    "fp": fp // 4,
                    "fn": fn // 4,
                    "precision": 0.8,
                    "recall": 0.7,
                    "f1": round(f1 + rng.uniform(-0.1, 0.1), 4),
                    "ap": 0.6,
                }
                for sc in SCANNERS
            }
            per_case = {
                n: {"tp": rng.randint(0, 3), "fp": rng.randint(0, 2), "fn": rng.randint(0, 2)} for n in case_names
            }
            results.append(
                {
                    "evaluation_id": e,
                    "submission_id": s,
                    "evaluation_version": 1,
                    "tp": tp,
                    "fp": fp,
                    "fn": fn,
                    "precision": tp / (tp + fp),
                    "recall": tp / (tp + fn),
                    "f1": f1,
                    "ap": round(f1 - 0.05, 3),
                    "f1_ci_low": f1 - 0.05,
                    "f1_ci_high": f1 + 0.05,
                    "groups": groups,
                    "cases": per_case,
                    "rank_robustness": 0.9,
                    "scoring_fingerprint": fingerprint({}, BENCH_DIGEST),
                    "provenance": PROVENANCE,
                    "created_at": now,
                }
            )
        for start in range(0, len(results), 2000):
            conn.execute(insert(Result), results[start : start + 2000])
    from sqlalchemy.orm import Session

    from app.leaderboard.standings import refresh_standings

    with Session(engine) as session:  # bulk core inserts bypass the session hooks: build the standings once
        t0 = time.perf_counter()
        refresh_standings(session, phase_id=int(phase))
        session.commit()
        print(f"standings rebuilt (ranking + 1000-resample robustness) in {time.perf_counter() - t0:.2f} s")
    engine.dispose()
    return int(phase)


def count_statements(url: str, phase_id: int) -> tuple[int, int]:
    """(SQL statements, entries) for one leaderboard request, in-process."""
    from fastapi.testclient import TestClient
    from sqlalchemy import event

    from app.db import make_engine, make_session_factory
    from app.main import create_app
    from app.settings import Settings

    engine = make_engine(url)
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    app = create_app(Settings(database_url=url), session_factory=make_session_factory(engine))
    with TestClient(app) as client:
        client.get(f"/api/v1/phases/{phase_id}/leaderboard")  # warm the connection pool
        statements.clear()
        body = client.get(f"/api/v1/phases/{phase_id}/leaderboard").json()
    engine.dispose()
    real = [s for s in statements if not s.lstrip().upper().startswith(("BEGIN", "COMMIT", "ROLLBACK", "PRAGMA"))]
    return len(real), len(body["entries"])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def closed_loop(url: str, *, requests: int, concurrency: int, deadline_s: float) -> dict[str, float]:
    """`concurrency` clients issue `requests` requests in all (or stop at the deadline)."""
    latencies: list[float] = []
    errors = 0
    remaining = requests
    stop_at = time.monotonic() + deadline_s
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=10) as client:

        async def worker() -> None:
            nonlocal remaining, errors
            while remaining > 0 and time.monotonic() < stop_at:
                remaining -= 1
                t0 = time.perf_counter()
                r = await client.get(url)
                latencies.append(time.perf_counter() - t0)
                errors += r.status_code != 200

        await worker_burst(client, url)
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * percentile(latencies, 99),
        "n": len(latencies),
        "errors": errors,
    }


async def worker_burst(client: httpx.AsyncClient, url: str) -> None:
    for _ in range(20):  # warm-up, not measured
        await client.get(url)


async def open_loop(url: str, *, rate: float, seconds: float, workers: int = 8) -> dict[str, float]:
    """Requests scheduled at a fixed rate for `seconds` (rate * seconds in all), sent by `workers` clients;
    latency counts from the scheduled time, so queueing behind a slow server is included."""
    latencies: list[float] = []
    errors = 0
    total = int(rate * seconds)
    limits = httpx.Limits(max_connections=workers, max_keepalive_connections=workers)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        await worker_burst(client, url)
        start = time.perf_counter()
        next_index = 0

        async def worker() -> None:
            nonlocal next_index, errors
            while next_index < total:
                i = next_index
                next_index += 1
                due = start + i / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                r = await client.get(url)
                latencies.append(time.perf_counter() - due)
                errors += r.status_code != 200

        await asyncio.gather(*(worker() for _ in range(workers)))
        elapsed = time.perf_counter() - start
    return {
        "offered_rps": rate,
        "achieved_rps": len(latencies) / elapsed,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * percentile(latencies, 99),
        "n": len(latencies),
        "errors": errors,
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc), to report server cost per request on a busy host."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file (embedded default)")
    parser.add_argument("--teams", type=int, default=200)
    parser.add_argument("--submissions", type=int, default=10_000)
    parser.add_argument("--cases", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-api-"))
    url = args.database_url or f"sqlite:///{tmp / 'bench.sqlite3'}"
    t0 = time.perf_counter()
    phase_id = seed(url, teams=args.teams, submissions=args.submissions, cases=args.cases, rng=random.Random(0))
    print(
        f"seeded {args.submissions} submissions over {args.teams} teams in {time.perf_counter() - t0:.1f} s "
        f"({url.split(':')[0]})"
    )
    statements, entries = count_statements(url, phase_id)
    print(f"SQL statements per leaderboard request: {statements}; entries: {entries}")

    port = free_port()
    env = {**os.environ, "MIDOG_DATABASE_URL": url, "MIDOG_DATA_DIR": str(tmp / "data")}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "app.main:create_app",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        env=env,
        cwd=REPO_ROOT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                if httpx.get(f"{base}/api/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.05)
        trivial_url = f"{base}/api/v1/health"
        board_url = f"{base}/api/v1/phases/{phase_id}/leaderboard"
        size = len(httpx.get(board_url).content)
        c0 = cpu_seconds(server.pid)
        trivial = asyncio.run(
            closed_loop(trivial_url, requests=args.requests, concurrency=args.concurrency, deadline_s=60)
        )
        c1 = cpu_seconds(server.pid)
        board = asyncio.run(closed_loop(board_url, requests=args.requests, concurrency=args.concurrency, deadline_s=60))
        c2 = cpu_seconds(server.pid)
        trivial["cpu_ms"] = 1000 * (c1 - c0) / (trivial["n"] + 20)
        board["cpu_ms"] = 1000 * (c2 - c1) / (board["n"] + 20)
        paced = asyncio.run(open_loop(board_url, rate=args.rate, seconds=args.seconds))
    finally:
        server.terminate()
        server.wait(timeout=10)

    print(
        f"\nleaderboard JSON: {entries} rows, {size / 1024:.0f} KiB; closed loop, {args.concurrency} clients, "
        f"{args.requests} requests each"
    )
    print(f"{'endpoint':<24}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'server CPU ms/req':>19}{'errors':>8}")
    for name, r in (("health (trivial)", trivial), ("leaderboard", board)):
        print(
            f"{name:<24}{r['rps']:>9.0f}{r['p50_ms']:>9.1f}{r['p99_ms']:>9.1f}{r['cpu_ms']:>19.2f}{r['errors']:>8.0f}"
        )
    print(
        f"throughput ratio leaderboard / trivial: {board['rps'] / trivial['rps']:.2f}; server CPU per request "
        f"ratio: {board['cpu_ms'] / trivial['cpu_ms']:.2f}; load average now {os.getloadavg()[0]:.1f} "
        f"on {os.cpu_count()} CPUs"
    )
    print(
        f"\nleaderboard at an offered {paced['offered_rps']:.0f} req/s for {args.seconds:.0f} s (open loop): "
        f"achieved {paced['achieved_rps']:.0f} req/s, p50 {paced['p50_ms']:.1f} ms, p99 {paced['p99_ms']:.1f} ms, "
        f"errors {paced['errors']:.0f}"
    )
    ok = board["rps"] >= 200 and paced["p99_ms"] < 50 and statements == 1
    print(f"target (>= 200 req/s, p99 < 50 ms at 200 req/s, 1 statement): {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
