"""A model archive of the reference CNN, submitted through the API of `midog-eval serve`
on the embedded default (SQLite, server-less broker, its own cpu and gpu workers), is run by the gpu worker in
the bwrap sandbox and ends on the leaderboard with the same per-scanner F1 as scoring its detections directly:
the same archive run by `python -m worker.inference.run` outside the server, scored by
`worker.evaluation.metrics.evaluate`.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import REPO_ROOT, broken_archive, require_bwrap
from tests.live_server import Server, running_server

pytestmark = pytest.mark.slow


@contextlib.contextmanager
def serve_with_gpu_worker(tmp_path: Path, runtime_dir: Path) -> Iterator[Server]:
    """`midog-eval serve` (API, cpu worker, gpu worker) with model archives run in a private bwrap runtime."""
    with running_server(
        tmp_path,
        gpu_worker=True,
        MIDOG_SANDBOX_BACKEND="bwrap",
        MIDOG_SANDBOX_RUNTIME_DIR=str(runtime_dir),
        # The direct run below is on the CPU in float32; the sandboxed one must compute the same thing.
        MIDOG_MODEL_GPU="none",
        MIDOG_MODEL_CPUS="2",
    ) as server:
        yield server


def _wait_for_result(
    client: httpx.Client, headers: dict[str, str], submission_id: int, server: Server, *, expect: str = "succeeded"
) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = client.get(f"/api/v1/submissions/{submission_id}", headers=headers).json()
        status = (body.get("evaluation") or {}).get("status")
        if status in {"succeeded", "failed"}:
            break
        time.sleep(0.5)
    assert (body.get("evaluation") or {}).get("status") == expect, f"{body}\n{server.logs()}"
    return dict(body["evaluation"])


def _wait_on_board(client: httpx.Client, phase_id: int, submission_id: int) -> dict[str, Any]:
    """The board once it shows the submission: it is rebuilt just after the result commits, not with it."""
    deadline = time.monotonic() + 10
    while True:
        board: dict[str, Any] = client.get(f"/api/v1/phases/{phase_id}/leaderboard").json()
        if any(e["submission_id"] == submission_id for e in board["entries"]) or time.monotonic() > deadline:
            return board
        time.sleep(0.2)


def _direct_scores(archive: Path, test_set: Path, out: Path) -> dict[str, Any]:
    """The same archive run outside the server, its detections scored per scanner by the scoring core."""
    from worker.datasets.manifest import TestSet
    from worker.evaluation.io import check_cases, load_ground_truth, read_predictions
    from worker.evaluation.metrics import evaluate

    done = subprocess.run(
        [
            *(sys.executable, "-m", "worker.inference.run", "--archive", str(archive)),
            *("--images", str(test_set), "--output", str(out), "--device", "cpu"),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    cases = TestSet.open(test_set)
    extents = {c.name: (c.width * float(c.spacing_mm or 0), c.height * float(c.spacing_mm or 0)) for c in cases.cases}
    predictions = check_cases(read_predictions(out), extents=extents, missing="error")
    groups = {case.name: case.groups["scanner"] for case in cases.cases}
    report = evaluate(load_ground_truth(cases.ground_truth_path), predictions, groups=groups)
    return {"overall": report.overall, "groups": report.groups, "detections": sum(len(p) for p in predictions.values())}


def test_a_reference_cnn_archive_submitted_through_the_api_scores_as_its_direct_run(
    tmp_path: Path, sandbox_runtime_dir: Path, tiny_set: Path, reference_cnn: Path, reference_cnn_zip: Path
) -> None:
    require_bwrap()
    started = time.monotonic()
    with serve_with_gpu_worker(tmp_path, sandbox_runtime_dir) as server:
        admin = server.organiser()
        with httpx.Client(base_url=server.base, timeout=30) as client:
            test_set = client.post(
                "/api/v1/admin/test-sets", json={"name": "tiny", "path": str(tiny_set)}, headers=admin
            )
            assert test_set.status_code == 201, test_set.text
            challenge = client.post("/api/v1/admin/challenges", json={"slug": "c", "title": "C"}, headers=admin)
            phase = client.post(
                f"/api/v1/admin/challenges/{challenge.json()['id']}/phases",
                json={
                    "slug": "final",
                    "title": "Final",
                    "test_set_id": test_set.json()["id"],
                    "allowed_kinds": ["model"],
                },
                headers=admin,
            )
            assert phase.status_code == 201, phase.text
            phase_id = phase.json()["id"]
            team = client.post(
                "/api/v1/auth/register",
                json={"team_name": "CNN", "email": "cnn@example.org", "password": "a-long-password"},
            ).json()
            headers = {"Authorization": f"Bearer {team['token']['token']}"}
            submitted = client.post(
                f"/api/v1/phases/{phase_id}/submissions",
                params={"kind": "model"},
                headers=headers,
                files={"file": ("reference-cnn.zip", reference_cnn_zip.read_bytes())},
            )
            assert submitted.status_code == 201, submitted.text
            _wait_for_result(client, headers, submitted.json()["id"], server)
            board = _wait_on_board(client, phase_id, submitted.json()["id"])
            # A model that does not fit its manifest fails with the hidden phase's line, and never reaches the board.
            broken = client.post(
                f"/api/v1/phases/{phase_id}/submissions",
                params={"kind": "model"},
                headers=headers,
                files={"file": ("broken.zip", broken_archive(reference_cnn, tmp_path / "broken.zip").read_bytes())},
            )
            assert broken.status_code == 201, broken.text
            failed = _wait_for_result(client, headers, broken.json()["id"], server, expect="failed")
            assert failed["error_message"] == "the program failed"
            later = client.get(f"/api/v1/phases/{phase_id}/leaderboard").json()
            assert [e["submission_id"] for e in later["entries"]] == [submitted.json()["id"]]
        entries = [e for e in board["entries"] if e["submission_id"] == submitted.json()["id"]]
        assert len(entries) == 1, board
        entry = entries[0]
        assert not list((sandbox_runtime_dir / "bwrap").glob("*/*")), "the sandboxed run left state behind"
    elapsed = time.monotonic() - started

    direct = _direct_scores(reference_cnn, tiny_set, tmp_path / "direct")
    assert direct["detections"] > 0, "the archive detected nothing: the comparison would be vacuous"
    scanners = sorted(direct["groups"])
    assert len(scanners) == 3
    assert sorted(entry["groups"]) == scanners
    for scanner in scanners:
        expected = direct["groups"][scanner]
        shown = entry["groups"][scanner]
        assert shown["f1"] == pytest.approx(expected.f1, abs=1e-12), scanner
        assert (shown["tp"], shown["fp"], shown["fn"]) == (expected.tp, expected.fp, expected.fn), scanner
    assert entry["f1"] == pytest.approx(direct["overall"].f1, abs=1e-12)
    assert direct["overall"].tp > 0 or direct["overall"].fp > 0
    print(
        f"serve + sandboxed model archive on the leaderboard in {elapsed:.1f} s; per-scanner F1 "
        + ", ".join(f"{s}={direct['groups'][s].f1:.3f}" for s in scanners)
    )
