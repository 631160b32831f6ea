"""Concurrent predictions uploads on the embedded default: `midog-eval serve` (SQLite, server-less broker, its
cpu worker scoring and writing results meanwhile), driven over loopback.

Measures, in one run against the same server process:
1. baseline: the same uploads one at a time (a single client), throughput and latency;
2. bursts of 50 and of 200 uploads sent at once from 10 teams: throughput, p50/p99 latency, and every
   status code seen (the target: only 201 and 429, never 503), each throughput also as a ratio to the
   baseline's;
3. afterwards: files in storage == submissions created, and no temp file left.
The phase allows 1,000 submissions a day per team, so every upload should be accepted (201). Every loop is bounded.

    .venv/bin/python bench/uploads.py [--bursts 50,200] [--baseline 30] [--teams 10] [--cases 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

SPACING_MM = 0.00025
WIDTH, HEIGHT = 2000, 1500


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_set(root: Path, cases: int, rng: random.Random) -> dict[str, list[list[float]]]:
    """A manifest-only test set (no images: predictions files need none) over four scanners."""
    from worker.datasets.manifest import Case, Manifest, write_test_set

    listed, truth = [], {}
    for index in range(cases):
        name = f"{index:03d}.tiff"
        scanner = f"scanner-{index % 4}"
        listed.append(
            Case(
                name=name,
                image=None,
                scanner=scanner,
                width=WIDTH,
                height=HEIGHT,
                spacing_mm=SPACING_MM,
                sha256=None,
                groups={"scanner": scanner},
            )
        )
        truth[name] = [
            [rng.uniform(0.05, WIDTH * SPACING_MM - 0.05), rng.uniform(0.05, HEIGHT * SPACING_MM - 0.05), 0.0]
            for _ in range(rng.randint(3, 9))
        ]
    write_test_set(root, Manifest(name="bench", cases=tuple(listed)), ground_truth=truth)
    return truth


def predictions(truth: dict[str, list[list[float]]], rng: random.Random) -> bytes:
    doc = {}
    for name, points in truth.items():
        found = [
            {"point": [x + rng.gauss(0, 0.001), y + rng.gauss(0, 0.001), 0.0], "probability": rng.random()}
            for x, y, _ in points
            if rng.random() < 0.7
        ]
        doc[name] = {"type": "Multiple points", "points": found, "version": {"major": 1, "minor": 0}}
    return json.dumps(doc).encode()


def organiser_token(env: dict[str, str]) -> str:
    code = (
        "from app.db import session_scope\nfrom app.auth.service import create_token\n"
        "from app.tables import TokenScope\nwith session_scope() as s:\n"
        "    print(create_token(s, scope=TokenScope.ORGANISER, name='bench').token)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO_ROOT, capture_output=True, text=True)
    return out.stdout.split()[-1]


async def upload(client: httpx.AsyncClient, url: str, token: str, body: bytes) -> tuple[int, float]:
    started = time.perf_counter()
    response = await client.post(
        url, headers={"Authorization": f"Bearer {token}"}, files={"file": ("p.json", body)}, timeout=300
    )
    return response.status_code, time.perf_counter() - started


async def burst(url: str, tokens: list[str], bodies: list[bytes], *, concurrency: int) -> tuple[float, list[Any]]:
    """Send `bodies` with at most `concurrency` in flight; (wall seconds, [(status, latency), ...])."""
    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits) as client:

        async def one(index: int) -> tuple[int, float]:
            async with gate:
                return await upload(client, url, tokens[index % len(tokens)], bodies[index])

        started = time.perf_counter()
        outcomes = await asyncio.gather(*(one(i) for i in range(len(bodies))))
    return time.perf_counter() - started, list(outcomes)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bursts", default="50,200", help="Comma-separated burst sizes (all sent at once).")
    parser.add_argument("--baseline", type=int, default=30, help="Uploads sent one at a time first.")
    parser.add_argument("--teams", type=int, default=10)
    parser.add_argument("--cases", type=int, default=20)
    args = parser.parse_args()
    rng = random.Random(0)
    work = Path(tempfile.mkdtemp(prefix="midog-bench-uploads-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIDOG_") and k not in {"DATABASE_URL", "REDIS_URL"}}
    env["MIDOG_DATA_DIR"] = str(work / "var")
    truth = write_set(work / "set", args.cases, rng)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-c", "from app.cli import main; main()", "serve", "--port", str(port), "--no-gpu-worker"]
    argv += ["--log-level", "warning"]
    server = subprocess.Popen(argv, cwd=REPO_ROOT, env=env, stderr=(work / "serve.log").open("wb"))
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                health = httpx.get(f"{base}/api/v1/health", timeout=1).json()
                if health["workers"] and all(w["alive"] and w["last_seen_at"] for w in health["workers"]):
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit(f"serve did not start; see {work / 'serve.log'}")
            time.sleep(0.2)
        admin = {"Authorization": f"Bearer {organiser_token(env)}"}
        with httpx.Client(base_url=base, timeout=60) as client:
            test_set = client.post(
                "/api/v1/admin/test-sets", json={"name": "bench", "path": str(work / "set")}, headers=admin
            ).json()
            challenge = client.post("/api/v1/admin/challenges", json={"slug": "b", "title": "B"}, headers=admin).json()
            phase = client.post(
                f"/api/v1/admin/challenges/{challenge['id']}/phases",
                json={
                    "slug": "p",
                    "title": "P",
                    "test_set_id": test_set["id"],
                    "daily_quota": 1000,
                    "max_active_per_team": 1000,
                    "scoring_options": {"bootstrap": 200},
                },
                headers=admin,
            ).json()
            tokens = [
                client.post(
                    "/api/v1/auth/register",
                    json={"team_name": f"Team {i}", "email": f"t{i}@example.org", "password": "a-long-password"},
                ).json()["token"]["token"]
                for i in range(args.teams)
            ]
        url = f"{base}/api/v1/phases/{phase['id']}/submissions"
        sizes = [int(s) for s in args.bursts.split(",")]
        bodies = [predictions(truth, rng) for _ in range(args.baseline + sum(sizes))]
        rows = []
        wall, outcomes = asyncio.run(burst(url, tokens, bodies[: args.baseline], concurrency=1))
        rows.append(("baseline, one at a time", args.baseline, wall, outcomes))
        offset = args.baseline
        for size in sizes:
            wall, outcomes = asyncio.run(burst(url, tokens, bodies[offset : offset + size], concurrency=size))
            rows.append((f"{size} at once", size, wall, outcomes))
            offset += size
        stored = len(list((work / "var" / "storage" / "submissions").rglob("*.*")))
        leftovers = len(list((work / "var" / "storage" / "tmp").glob("*")))
        listed = httpx.get(f"{base}/api/v1/admin/submissions", params={"limit": 1000}, headers=admin, timeout=60).json()
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    base_rate = rows[0][1] / rows[0][2]
    print(f"{'run':<26} {'uploads':>7} {'wall s':>7} {'uploads/s':>9} {'ratio':>6} {'p50 ms':>7} {'p99 ms':>7}  codes")
    for label, count, wall, outcomes in rows:
        latencies = [latency * 1000 for _, latency in outcomes]
        codes = dict(sorted(Counter(code for code, _ in outcomes).items()))
        rate = count / wall
        print(
            f"{label:<26} {count:>7} {wall:>7.2f} {rate:>9.1f} {rate / base_rate:>6.2f} "
            f"{statistics.median(latencies):>7.0f} {percentile(latencies, 0.99):>7.0f}  {codes}"
        )
    print(f"submissions created {len(listed)}, files in storage {stored}, temp files left {leftovers}")


if __name__ == "__main__":
    main()
