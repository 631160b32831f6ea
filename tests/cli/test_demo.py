"""`midog-eval demo` end to end on the embedded default: the leaderboard comes up with ranked (simulated) teams
and baseline entries scored per scanner, with its ranking analysis, the pages serve it, and Ctrl-C stops the
server and every worker it started."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "test-artifacts"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _processes_using(data_dir: Path) -> list[int]:
    """Pids whose environment points MIDOG_DATA_DIR at `data_dir` (the server and its workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"MIDOG_DATA_DIR={data_dir}".encode() in environ:
            found.append(int(entry.name))
    return found


def _screenshot(url: str, path: Path, profile: Path) -> None:
    """A screenshot of the demo's leaderboard when chromium and playwright are here (the browser test proper,
    tests/pages/test_browser.py, requires them in CI)."""
    chromium = Path("/usr/bin/chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return
    if not chromium.is_file():
        return
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(chromium),
            headless=True,
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
            viewport={"width": 1280, "height": 900},
        )
        page = context.new_page()
        page.goto(url)
        path.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(path), full_page=True)
        context.close()


@pytest.mark.slow
def test_demo_serves_a_leaderboard_of_teams_and_baselines(tmp_path: Path) -> None:
    data_dir = tmp_path / "demo"
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIDOG_") and k not in {"DATABASE_URL", "REDIS_URL"}}
    argv = [sys.executable, "-c", "from app.cli import main; main()", "demo", "--data-dir", str(data_dir)]
    argv += ["--port", str(port), "--cases", "2", "--size", "512x384"]
    started = time.monotonic()
    demo = subprocess.Popen(argv, env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = ""
        assert demo.stdout is not None
        for line in demo.stdout:
            if line.startswith("leaderboard: "):
                url = line.split(": ", 1)[1].strip()
                break
        assert url, demo.stderr.read() if demo.stderr else ""
        ready_s = time.monotonic() - started
        assert ready_s < 600  # a few minutes on two idle cores; the bound catches a demo that never gets ready

        phase_id = int(url.rstrip("/").split("/")[-2])
        board = httpx.get(f"http://127.0.0.1:{port}/api/v1/phases/{phase_id}/leaderboard", timeout=30).json()
        assert board["group_labels"] == [f"scanner-{c}" for c in "ABCD"]
        baselines = [e for e in board["entries"] if e["is_baseline"]]
        ranked = [e for e in board["entries"] if not e["is_baseline"]]
        assert all(e["rank"] is None for e in baselines)
        assert any(e["team_name"] == "Baseline: blob detector" for e in baselines)
        assert len(ranked) >= 6
        assert [e["rank"] for e in ranked] == sorted(e["rank"] for e in ranked)
        for entry in board["entries"]:
            assert set(entry["groups"]) == set(board["group_labels"])
            assert entry["f1_ci_low"] is not None  # the demo phase bootstraps CIs
            assert entry["generalisation"]["seen_cases"] == 2  # scanner-A is declared seen
        page = httpx.get(url, timeout=30)
        assert page.status_code == 200
        assert page.text.count('class="badge baseline"') == len(baselines)
        _screenshot(url, ARTIFACTS / "demo-leaderboard.png", tmp_path / "profile")

        analysis_line = demo.stdout.readline()
        assert analysis_line.startswith("ranking analysis: "), analysis_line
        analysis_url = analysis_line.split(": ", 1)[1].strip()
        doc = httpx.get(f"http://127.0.0.1:{port}/api/v1/phases/{phase_id}/analysis", timeout=30).json()["analysis"]
        assert doc["available"] is True
        assert len(doc["ranked"]) == len(ranked)
        assert doc["seen_groups"] == ["scanner-A"]
        assert httpx.get(analysis_url, timeout=30).text.count('<svg id="') == 5
        # the reference CNN declares its features: its page reports their shift between scanners
        cnn = next(e for e in baselines if e["team_name"] == "Baseline: cnn")
        cnn_page = httpx.get(f"http://127.0.0.1:{port}/submissions/{cnn['submission_id']}", timeout=30).text
        assert 'id="representation-summary"' in cnn_page

        # the Track 2 phase: atypical versus normal figures, its baselines ranked apart by balanced accuracy
        track2 = demo.stdout.readline()
        assert track2.startswith("Track 2 leaderboard: "), track2
        track2_id = int(track2.split(": ", 1)[1].strip().rstrip("/").split("/")[-2])
        stacks = httpx.get(f"http://127.0.0.1:{port}/api/v1/phases/{track2_id}/leaderboard", timeout=30).json()
        assert stacks["task"] == "classification"
        scores = {e["team_name"]: e["balanced_accuracy"] for e in stacks["entries"]}
        assert scores["Baseline: prior only"] == 0.5
        assert scores["Baseline: lobe counter"] > 0.6
        assert scores["Baseline: reference CNN classifier"] > 0.6  # an archive run by the gpu worker (bwrap)
        assert httpx.get(f"http://127.0.0.1:{port}/phases/{track2_id}/leaderboard", timeout=30).status_code == 200
    finally:
        demo.send_signal(signal.SIGINT)  # Ctrl-C
        stopped = time.monotonic()
        code = demo.wait(timeout=60)
    assert code == 0
    while _processes_using(data_dir) and time.monotonic() - stopped < 60:
        time.sleep(0.2)
    assert _processes_using(data_dir) == []
    # The demo's tokens end with it, and would have expired within a day anyway.
    with sqlite3.connect(data_dir / "midog-eval.sqlite3") as db:
        tokens = db.execute("SELECT name, revoked_at, expires_at FROM api_token").fetchall()
    assert tokens
    now = datetime.now(UTC).replace(tzinfo=None)
    for name, revoked_at, expires_at in tokens:
        assert revoked_at is not None, name
        assert datetime.fromisoformat(expires_at).replace(tzinfo=None) <= now + timedelta(days=1), name


@pytest.mark.slow
def test_sigterm_of_the_demo_mid_model_run_leaves_no_process_no_mount_and_host_data_intact(tmp_path: Path) -> None:
    """The unlucky organiser's case: the demo is stopped while the gpu worker runs a model archive in bwrap."""
    import shutil

    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed (CI installs it)")
    import tempfile

    from tests.host_checks import host_mounts_under, sentinels
    from tests.live_server import descendants, wait_gone
    from tests.sandbox.images import RunProcesses
    from worker.safe_delete import remove_tree

    data_dir = tmp_path / "demo"
    # The demo's sandbox runtime directory lands in TMPDIR, which the sandbox's uid must be able to traverse.
    runtime_parent = Path(tempfile.mkdtemp(prefix="midog-demo-test-"))
    runtime_parent.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIDOG_") and k not in {"DATABASE_URL", "REDIS_URL"}}
    env["TMPDIR"] = str(runtime_parent)
    argv = [sys.executable, "-c", "from app.cli import main; main()", "demo", "--data-dir", str(data_dir)]
    argv += ["--port", str(_free_port()), "--cases", "2", "--size", "512x384"]
    demo = subprocess.Popen(argv, env=env, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        # A model run is under way once the sandbox's uid has processes under this demo (not another run's).
        runs = RunProcesses(demo.pid, 10001)
        while not runs.look() and time.monotonic() < deadline and demo.poll() is None:
            time.sleep(0.1)
        assert runs.processes, "no model run started"
        images = sorted((data_dir / "test-sets").glob("*/images"))
        before = sentinels(*images)
        tree = descendants(demo.pid)
        demo.send_signal(signal.SIGTERM)
        assert wait_gone(tree, 60) == [], "processes outlived the demo"
        demo.wait(timeout=10)
    finally:
        if demo.poll() is None:
            demo.kill()
    assert host_mounts_under(runtime_parent, tmp_path) == []
    assert list(runtime_parent.glob("midog-demo-sandbox-*")) == []
    remove_tree(runtime_parent)
    assert sentinels(*images) == before, "a mounted source changed"
