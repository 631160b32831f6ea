"""Servers of a test's own that it may stop and restart at will: a redis-server and a PostgreSQL cluster.

A plain module shared by the test folders (import it as `tests.services`); the fixtures `own_redis` and
`own_postgres` of each folder's conftest wrap it. The shared servers on the standard ports are never
restarted or flushed by a test. In CI (CI=true) a missing server binary is a failure, elsewhere a skip.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from worker.safe_delete import discard_tree


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def missing(message: str) -> None:
    if in_ci():
        pytest.fail(message + " (CI requires it; .ci/services.sh installs it)")
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return predicate()


class OwnRedis:
    """A redis-server on a free port; `start()` returns its URL (the same on every start)."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            missing("redis-server is not installed")
        self.binary = str(binary)
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> str:
        argv = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        process = subprocess.Popen(
            [*argv, "--dir", str(self.directory)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self._processes.append(process)
        import redis

        def up() -> bool:
            try:
                return bool(redis.Redis.from_url(self.url, socket_connect_timeout=0.5).ping())
            except Exception:
                return False

        assert wait_until(up, 10), "own redis-server did not start"
        return self.url

    def stop(self) -> None:
        for process in self._processes:
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=10)


@contextlib.contextmanager
def own_redis(directory: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(directory)
    try:
        yield server
    finally:
        server.stop()


class OwnPostgres:
    """A throwaway PostgreSQL cluster on a free port (run as the postgres user when the tests run as root)."""

    def __init__(self) -> None:
        initdb = shutil.which("initdb") or next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))), None)
        if initdb is None:
            missing("initdb is not installed")
        self.bindir = Path(str(initdb)).parent
        self.data = Path(f"/tmp/midog-pg-{uuid.uuid4().hex[:8]}")
        self.port = free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        self._as_postgres = os.geteuid() == 0  # PostgreSQL refuses to run as root
        self.data.mkdir()
        if self._as_postgres:
            shutil.chown(self.data, "postgres", "postgres")
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        self._options = f"'-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 -c fsync=off'"

    def _run(self, *argv: str) -> None:
        command = list(argv)
        if self._as_postgres:
            command = ["su", "postgres", "-s", "/bin/sh", "-c", " ".join(command)]
        subprocess.run(command, check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        pg_ctl = str(self.bindir / "pg_ctl")
        self._run(pg_ctl, "-D", str(self.data), "-o", self._options, "-w", "-l", str(self.data / "log"), "start")

    def stop(self) -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")


@contextlib.contextmanager
def own_postgres() -> Iterator[OwnPostgres]:
    cluster = OwnPostgres()
    cluster.start()
    try:
        yield cluster
    finally:
        with contextlib.suppress(Exception):
            cluster.stop()
        discard_tree(cluster.data)
