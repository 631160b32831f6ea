"""`midog-eval serve` as a subprocess for tests that need the whole server (API and workers) running.

A plain module shared by the test folders (import it as `tests.live_server`), not a test file.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def organiser_headers(env: dict[str, str]) -> dict[str, str]:
    """Headers with a fresh organiser token for the server configured by `env`, made the way
    `midog-eval admin create-token` makes one."""
    code = (
        "from app.db import session_scope\n"
        "from app.auth.service import create_token\n"
        "from app.tables import TokenScope\n"
        "with session_scope() as s:\n"
        "    print(create_token(s, scope=TokenScope.ORGANISER, name='tests').token)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    return {"Authorization": f"Bearer {out.stdout.strip().splitlines()[-1]}"}


@dataclass
class Server:
    """A running `serve`: its base URL, environment, data directory and process id."""

    base: str
    env: dict[str, str]
    data_dir: Path
    pid: int

    def organiser(self) -> dict[str, str]:
        return organiser_headers(self.env)

    def logs(self) -> str:
        """The tails of the workers' logs, for assertion messages."""
        parts = []
        for name in ("worker-gpu.log", "worker-cpu.log"):
            path = self.data_dir / "logs" / name
            if path.exists():
                parts.append(f"--- {name} ---\n{path.read_text(errors='replace')[-4000:]}")
        return "\n".join(parts)


def wait_healthy(base: str, process: subprocess.Popen[bytes], log: Path, timeout_s: float = 90) -> dict[str, Any]:
    """Until the API answers and every worker it supervises has reported in, alive."""
    deadline = time.monotonic() + timeout_s
    while True:
        assert process.poll() is None, log.read_text()[-3000:]
        with contextlib.suppress(httpx.HTTPError):
            health = httpx.get(f"{base}/api/v1/health", timeout=1).json()
            workers = health["workers"]
            if workers and all(w["alive"] and w["last_seen_at"] for w in workers):
                return dict(health)
        assert time.monotonic() < deadline, "serve did not become healthy"
        time.sleep(0.2)


@contextlib.contextmanager
def running_server(tmp_path: Path, *, gpu_worker: bool = False, **environment: str) -> Iterator[Server]:
    """`midog-eval serve` in its own process group, with only the given configuration in its environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIDOG_") and k not in {"DATABASE_URL", "REDIS_URL"}}
    data_dir = tmp_path / "var"
    env.update(MIDOG_DATA_DIR=str(data_dir), **environment)
    port = free_port()
    argv = [sys.executable, "-c", "from app.cli import main; main()", "serve", "--port", str(port)]
    argv += [] if gpu_worker else ["--no-gpu-worker"]
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(
        argv, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, process, tmp_path / "serve.log")
        yield Server(base, env, data_dir, process.pid)
    finally:
        # serve stops its workers on SIGTERM; the group kill covers a serve that died before it could.
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def descendants(pid: int) -> dict[int, str]:
    """Every live descendant of `pid` (any thread's children), as pid -> start time (tells reused pids apart)."""
    parents: dict[int, list[int]] = {}
    starts: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) is not None and fields[0] != "Z":
            parents.setdefault(int(fields[1]), []).append(int(entry.name))
            starts[int(entry.name)] = fields[19]
    found: dict[int, str] = {}
    todo = list(parents.get(pid, []))
    while todo:
        child = todo.pop()
        if child in starts and child not in found:
            found[child] = starts[child]
            todo.extend(parents.get(child, []))
    return found


def still_running(processes: dict[int, str]) -> list[int]:
    """Which of these (pid -> start time) still run: same pid, same start time, not a zombie."""
    alive = []
    for pid, start in processes.items():
        fields = _stat(pid)
        if fields is not None and fields[0] != "Z" and fields[19] == start:
            alive.append(pid)
    return alive


def wait_gone(processes: dict[int, str], timeout_s: float) -> list[int]:
    """Wait until none of `processes` runs; returns those still running at the deadline."""
    deadline = time.monotonic() + timeout_s
    while (left := still_running(processes)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def worker_pids(serve_pid: int, queue: str) -> list[int]:
    """Worker main processes of `queue` that serve started itself (its direct children)."""
    found = []
    for pid in descendants(serve_pid):
        fields = _stat(pid)
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ours = fields is not None and int(fields[1]) == serve_pid and b"--queues" in argv
        if ours and argv[argv.index(b"--queues") + 1] == queue.encode():
            found.append(pid)
    return found
