"""End to end on the embedded default: `midog-eval serve` (SQLite, server-less broker, no services), one
predictions file for a MIDOG-sized synthetic set submitted through the API, timed until it is on the
leaderboard JSON. Target (docs/performance.md, Service): under 2 s from accepted to on the leaderboard.

The same predictions are also scored in this process with the scoring core, so the table shows how much
of the end-to-end time is scoring and how much is the service around it (measured in the same run).

    .venv/bin/python bench/e2e.py [--cases 100] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
SPACING_MM = 0.00025
WIDTH, HEIGHT = 7215, 5412  # a MIDOG region
SCANNERS = ("Hamamatsu XR", "Hamamatsu S360", "Aperio CS2", "Leica GT450", "3DHistech")


def build_set(root: Path, cases: int, seed: int) -> tuple[Path, dict[str, Any], int, int]:
    """An annotation-only test set (manifest + ground truth; scoring a predictions file reads no images)."""
    sys.path.insert(0, str(REPO_ROOT))
    from worker.datasets.manifest import Case, Manifest, write_test_set

    rng = np.random.default_rng(seed)
    manifest_cases = []
    truth: dict[str, list[list[float]]] = {}
    predictions: dict[str, Any] = {}
    n_gt = n_pred = 0
    width_mm, height_mm = WIDTH * SPACING_MM, HEIGHT * SPACING_MM
    for index in range(cases):
        name = f"{index + 1:03d}.tiff"
        scanner = SCANNERS[index % len(SCANNERS)]
        manifest_cases.append(
            Case(name=name, image=None, scanner=scanner, width=WIDTH, height=HEIGHT, spacing_mm=SPACING_MM, sha256=None)
        )
        count = int(rng.integers(60, 170))  # ~115 per case: ~11,500 over 100 cases, like MIDOG++
        gt = np.column_stack([rng.uniform(0.02, width_mm - 0.02, count), rng.uniform(0.02, height_mm - 0.02, count)])
        truth[name] = [[float(x), float(y), 0.0] for x, y in gt]
        hits = gt[rng.random(count) < 0.75]
        hits = hits + rng.normal(0, 0.0015, hits.shape)
        false = np.column_stack(
            [rng.uniform(0.01, width_mm - 0.01, count * 2 // 3), rng.uniform(0.01, height_mm - 0.01, count * 2 // 3)]
        )
        points = np.clip(np.vstack([hits, false]), 0.001, [width_mm - 0.001, height_mm - 0.001])
        probabilities = np.concatenate([rng.uniform(0.4, 1.0, len(hits)), rng.uniform(0.0, 0.7, len(false))])
        predictions[name] = {
            "type": "Multiple points",
            "version": {"major": 1, "minor": 0},
            "points": [
                {"point": [float(x), float(y), 0.0], "probability": float(p), "name": "mitotic figure"}
                for (x, y), p in zip(points, probabilities, strict=True)
            ],
        }
        n_gt += count
        n_pred += len(points)
    write_test_set(root, Manifest(name=root.name, cases=tuple(manifest_cases)), ground_truth=truth)
    return root, predictions, n_gt, n_pred


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_healthy(base: str, process: subprocess.Popen[bytes], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"midog-eval serve exited with {process.returncode}")
        try:
            if httpx.get(f"{base}/api/v1/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit("midog-eval serve did not become healthy")


def _organiser_token(env: dict[str, str]) -> str:
    """What an organiser's shell on the server does: issue an organiser token in the server's database."""
    code = (
        "from app.db import session_scope\n"
        "from app.auth.service import create_token\n"
        "from app.tables import TokenScope\n"
        "with session_scope() as s:\n"
        "    print(create_token(s, scope=TokenScope.ORGANISER, name='bench').token)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO_ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(out.stderr)
    return out.stdout.strip().splitlines()[-1]


def _check(response: httpx.Response, expected: int) -> Any:
    if response.status_code != expected:
        raise SystemExit(f"{response.request.method} {response.request.url}: {response.status_code} {response.text}")
    return response.json()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="midog-e2e-") as tmp:
        work = Path(tmp)
        set_dir, predictions, n_gt, n_pred = build_set(work / "midog-synthetic", args.cases, args.seed)
        payload = json.dumps(predictions).encode()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MIDOG_", "DATABASE_URL", "REDIS_URL"))}
        env["MIDOG_DATA_DIR"] = str(work / "var")
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        serve = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from app.cli import main; main()",
                "serve",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            cwd=REPO_ROOT,
            env=env,
            start_new_session=True,
        )
        try:
            started = time.monotonic()
            _wait_healthy(base, serve)
            startup_s = time.monotonic() - started
            admin = {"Authorization": f"Bearer {_organiser_token(env)}"}
            with httpx.Client(base_url=base, timeout=60) as client:
                test_set = _check(
                    client.post(
                        "/api/v1/admin/test-sets", json={"name": "midog-synthetic", "path": str(set_dir)}, headers=admin
                    ),
                    201,
                )
                challenge = _check(
                    client.post("/api/v1/admin/challenges", json={"slug": "bench", "title": "Bench"}, headers=admin),
                    201,
                )
                phase = _check(
                    client.post(
                        f"/api/v1/admin/challenges/{challenge['id']}/phases",
                        json={
                            "slug": "preliminary",
                            "title": "Preliminary",
                            "test_set_id": test_set["id"],
                            "daily_quota": None,
                            "max_active_per_team": 1,
                            "entry_policy": "latest",
                        },
                        headers=admin,
                    ),
                    201,
                )
                team = _check(
                    client.post(
                        "/api/v1/auth/register",
                        json={"team_name": "Bench team", "email": "bench@example.org", "password": "a-long-password"},
                    ),
                    201,
                )
                headers = {"Authorization": f"Bearer {team['token']['token']}"}
                totals: list[float] = []
                accepts: list[float] = []
                for _ in range(args.repeats):
                    t0 = time.monotonic()
                    submitted = _check(
                        client.post(
                            f"/api/v1/phases/{phase['id']}/submissions",
                            params={"kind": "predictions"},
                            headers=headers,
                            files={"file": ("predictions.json", payload, "application/json")},
                        ),
                        201,
                    )
                    accepted = time.monotonic()
                    while True:
                        board = _check(client.get(f"/api/v1/phases/{phase['id']}/leaderboard"), 200)
                        if any(e["submission_id"] == submitted["id"] for e in board["entries"]):
                            break
                        if time.monotonic() - t0 > 60:
                            raise SystemExit(f"submission {submitted['id']} not on the leaderboard after 60 s")
                        time.sleep(0.02)
                    done = time.monotonic()
                    accepts.append(accepted - t0)
                    totals.append(done - accepted)
        finally:
            os.killpg(serve.pid, signal.SIGTERM)
            try:
                serve.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(serve.pid, signal.SIGKILL)

        # The scoring core alone on the same file, in this process, for the ratio.
        from worker.pipeline import PipelineInput, run_pipeline

        (work / "p.json").write_bytes(payload)
        inp = PipelineInput(
            evaluation_id=0,
            kind="predictions",
            artifact=work / "p.json",
            test_set_dir=set_dir,
            work_dir=work,
            timeout_s=60,
        )
        core: list[float] = []
        for _ in range(args.repeats):
            t0 = time.monotonic()
            run_pipeline(inp)
            core.append(time.monotonic() - t0)

    accepted_to_board = statistics.median(totals)
    end_to_end = [a + t for a, t in zip(accepts, totals, strict=True)]

    def row(label: str, values: list[float]) -> str:
        return f"{label:<40}{statistics.median(values):>10.3f}{min(values):>10.3f}{max(values):>10.3f}"

    print(f"embedded default (SQLite + server-less broker), {args.cases} cases, {n_gt} GT, {n_pred} predictions")
    print(f"server start-up (migrations, API, workers): {startup_s:.2f} s; {args.repeats} submissions")
    print(f"{'step':<40}{'median s':>10}{'min s':>10}{'max s':>10}")
    print(row("upload + validation (POST, 201)", accepts))
    print(row("accepted -> on leaderboard JSON", totals))
    print(row("POST start -> on leaderboard JSON", end_to_end))
    print(row("pipeline alone (read, check, score)", core))
    print(f"ratio accepted->leaderboard / pipeline alone: {accepted_to_board / statistics.median(core):.2f}")
    print(f"target accepted -> leaderboard < 2 s: {'met' if accepted_to_board < 2.0 else 'NOT met'}")


if __name__ == "__main__":
    main()
