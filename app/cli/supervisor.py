"""`serve`'s supervisor: runs the worker processes beside the API, restarts any that dies, stops them all.

- Each worker is `midog-eval worker ... --die-with-parent` in a process group of its own (so that a stop
  reaches its pool children too); the flag arms the parent-death signal, so even a SIGKILL of `serve` takes
  the workers down, and with them their pool children, beat and sandbox runs (worker.process_tree).
- One monitor thread starts every child and polls them twice a second. The parent-death signal fires when
  the thread that started a child ends, so the children are started from this thread, which lives as long
  as the supervisor. A child that exited is restarted at once; one that keeps dying is restarted at most
  `max_restarts` times per `window_s`, then after `cool_down_s`. Every exit and restart is logged.
- `workers()` is what /api/v1/health reports for the workers started here (running, restarts).
- `stop()`: SIGTERM to each group (an idle Celery worker stops cleanly and says so), then SIGKILL after
  `grace_s`: nothing outlives `serve`, and a running evaluation is picked up again at the next start.

Must not import FastAPI, SQLAlchemy, Celery or torch.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from app.settings import child_environment

logger = logging.getLogger("midog_eval.supervisor")
if not logger.handlers:  # serve's stderr, beside uvicorn's own lines
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("%(asctime)s supervisor %(levelname)s %(message)s"))
    logger.addHandler(_handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False

POLL_S = 0.5


@dataclass
class Child:
    """One supervised worker: how to start it, and what happened to it."""

    name: str
    queues: list[str]
    argv: list[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    recent_starts: deque[float] = field(default_factory=lambda: deque(maxlen=64))
    not_before: float = 0.0


@dataclass(frozen=True)
class SupervisedWorker:
    """What the health check needs to know (app.worker_hosts.service.SupervisedWorker)."""

    name: str
    queues: list[str]
    running: bool
    restarts: int
    pid: int | None


class Supervisor:
    def __init__(
        self,
        *,
        max_restarts: int = 5,
        window_s: float = 60.0,
        cool_down_s: float = 30.0,
        grace_s: float = 3.0,
    ) -> None:
        self.max_restarts = max_restarts
        self.window_s = window_s
        self.cool_down_s = cool_down_s
        self.grace_s = grace_s
        self._children: list[Child] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._logs: list[IO[bytes]] = []

    def add(self, name: str, queues: Sequence[str], argv: Sequence[str], log_path: Path) -> None:
        """Register a worker; `name` may contain %h (this host's name), as Celery node names do."""
        node = name.replace("%h", socket.gethostname())
        self._children.append(Child(node, list(queues), [*argv, "--die-with-parent"], log_path))

    def start(self) -> None:
        """Start the monitor thread, which starts every child; returns once they all were started."""
        started = threading.Event()
        self._thread = threading.Thread(target=self._monitor, args=(started,), name="supervisor", daemon=True)
        self._thread.start()
        started.wait(timeout=30)

    def workers(self) -> list[SupervisedWorker]:
        with self._lock:
            return [
                SupervisedWorker(
                    child.name,
                    list(child.queues),
                    child.process is not None and child.process.poll() is None,
                    child.restarts,
                    None if child.process is None else child.process.pid,
                )
                for child in self._children
            ]

    def pids(self) -> list[int]:
        with self._lock:
            return [c.process.pid for c in self._children if c.process is not None and c.process.poll() is None]

    def stop(self) -> None:
        """Stop the monitor and every child: SIGTERM to each group, SIGKILL after `grace_s`."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._lock:
            running = [c.process for c in self._children if c.process is not None and c.process.poll() is None]
        for process in running:
            _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + self.grace_s
        for process in running:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
        for process in running:
            # Whatever is left of the group (pool children of a worker that exited) goes too.
            _signal_group(process, signal.SIGKILL)
            process.wait()
        for log in self._logs:
            log.close()

    def _monitor(self, started: threading.Event) -> None:
        for child in self._children:
            self._spawn(child)
        started.set()
        while not self._stopping.wait(POLL_S):
            for child in self._children:
                try:
                    self._check(child)
                except Exception:  # the monitor must outlive any one failure: the children die with it
                    logger.exception("supervising %s failed", child.name)

    def _check(self, child: Child) -> None:
        process = child.process
        if process is not None and process.poll() is None:
            return
        now = time.monotonic()
        if process is not None:
            # Its pool children die with it (parent-death signal); anything else left in the group goes now.
            _signal_group(process, signal.SIGKILL)
            logger.error("worker %s (pid %s) exited with status %s", child.name, process.pid, process.returncode)
            with self._lock:
                child.process = None
            recent = [t for t in child.recent_starts if now - t < self.window_s]
            if len(recent) >= self.max_restarts:
                child.not_before = now + self.cool_down_s
                logger.error(
                    "worker %s died %d times in %.0f s; next restart in %.0f s",
                    child.name,
                    len(recent),
                    self.window_s,
                    self.cool_down_s,
                )
        if now < child.not_before or self._stopping.is_set():
            return
        child.restarts += 1
        logger.warning("restarting worker %s (restart %d)", child.name, child.restarts)
        self._spawn(child)

    def _spawn(self, child: Child) -> None:
        child.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = child.log_path.open("ab")
        self._logs.append(log)
        env = child_environment(MIDOG_SUPERVISED_BY=str(os.getpid()))
        process = subprocess.Popen(child.argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        child.recent_starts.append(time.monotonic())
        with self._lock:
            child.process = process


def _signal_group(process: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)
