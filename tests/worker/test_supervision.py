"""`serve` supervises its workers (R11) and leaves nothing behind (R12), on the embedded default.

R11: a worker SIGKILLed is restarted within 10 s; /api/v1/health says degraded until the new process has
reported in. R12: `kill -9` of serve leaves no process of its tree after 10 s, and a restart on the same data
directory starts exactly one worker of each kind; a second serve on a data directory in use refuses to start.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.live_server import REPO_ROOT, descendants, running_server, wait_gone, wait_healthy, worker_pids

pytestmark = pytest.mark.slow


def _health(base: str) -> dict[str, Any]:
    return dict(httpx.get(f"{base}/api/v1/health", timeout=5).json())


def test_R11_a_killed_worker_is_restarted_and_health_is_degraded_meanwhile(tmp_path: Path) -> None:
    with running_server(tmp_path, gpu_worker=True) as server:
        health = _health(server.base)
        assert health["status"] == "ok"
        assert sorted(w["name"].split("@")[0] for w in health["workers"]) == ["cpu", "gpu"]
        [victim] = worker_pids(server.pid, "gpu")
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        seen_degraded = False
        restarted_after = None
        while time.monotonic() - killed_at < 30:
            health = _health(server.base)
            gpu = next(w for w in health["workers"] if w["name"].startswith("gpu"))
            if health["status"] == "degraded":
                seen_degraded = True
                assert not gpu["alive"]
            elif seen_degraded and gpu["alive"]:
                restarted_after = time.monotonic() - killed_at
                break
            time.sleep(0.1)
        assert seen_degraded, "health never said degraded while the worker was down"
        assert restarted_after is not None, server.logs()
        assert restarted_after < 10, f"the worker was back only after {restarted_after:.1f} s"
        assert gpu["restarts"] == 1
        assert worker_pids(server.pid, "gpu") not in ([], [victim])
        assert "restarting worker gpu@" in (tmp_path / "serve.log").read_text()


def test_R12_kill_9_of_serve_leaves_nothing_and_a_restart_finds_no_duplicate(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIDOG_") and k not in {"DATABASE_URL", "REDIS_URL"}}
    env["MIDOG_DATA_DIR"] = str(tmp_path / "var")

    def start(port: int) -> subprocess.Popen[bytes]:
        argv = [sys.executable, "-c", "from app.cli import main; main()", "serve", "--port", str(port)]
        return subprocess.Popen(
            argv, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=(tmp_path / "serve.log").open("ab")
        )

    from tests.live_server import free_port

    port = free_port()
    first = start(port)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", first, tmp_path / "serve.log")
        tree = descendants(first.pid)
        assert len(tree) >= 4, tree  # two workers, a pool child each, beat
        # A second serve on the same data directory refuses: it would run duplicate workers and beat.
        second = subprocess.run(
            [sys.executable, "-c", "from app.cli import main; main()", "serve", "--port", str(free_port())],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 1
        assert "another midog-eval serve" in second.stderr
        first.send_signal(signal.SIGKILL)
        first.wait()
        assert wait_gone(tree, 60) == [], "processes of serve's tree outlived it"
    finally:
        if first.poll() is None:
            first.kill()
    restarted = start(port)
    try:
        health = wait_healthy(f"http://127.0.0.1:{port}", restarted, tmp_path / "serve.log")
        assert sorted(w["name"].split("@")[0] for w in health["workers"]) == ["cpu", "gpu"]
        for queue in ("cpu", "gpu"):
            assert len(worker_pids(restarted.pid, queue)) == 1
    finally:
        tree = descendants(restarted.pid)
        restarted.send_signal(signal.SIGTERM)
        restarted.wait(timeout=30)
        assert wait_gone(tree, 60) == []
