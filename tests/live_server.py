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

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """A running `serve`: its base URL, environment, data directory and process id."""

    base: str
    env: dict[str, str]
    data_dir: Path
    pid: int

    def organiser(self) -> dict[str, str]:
        """Headers with a fresh organiser token, made the way `midog-eval admin create-token` makes one."""
        code = (
            "from app.cli.worker import adopt_standard_environment\n"
            "adopt_standard_environment()\n"
            "from app.db import session_scope\n"
            "from app.auth.service import create_token\n"
            "from app.models import TokenScope\n"
            "with session_scope() as s:\n"
            "    print(create_token(s, scope=TokenScope.ORGANISER, name='tests').token)\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], env=self.env, cwd=REPO_ROOT, capture_output=True, text=True, check=True
        )
        return {"Authorization": f"Bearer {out.stdout.strip().splitlines()[-1]}"}

    def logs(self) -> str:
        """The tails of the workers' logs, for assertion messages."""
        parts = []
        for name in ("worker-gpu.log", "worker-cpu.log"):
            path = self.data_dir / "logs" / name
            if path.exists():
                parts.append(f"--- {name} ---\n{path.read_text(errors='replace')[-4000:]}")
        return "\n".join(parts)


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
    deadline = time.monotonic() + 90
    try:
        while True:
            assert process.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/api/v1/health", timeout=1).status_code == 200:
                    break
            assert time.monotonic() < deadline, "serve did not become healthy"
            time.sleep(0.2)
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
