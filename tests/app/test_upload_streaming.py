"""U1 and U2 against a real uvicorn process: a declared Content-Length over the limit is refused with 413
before the body is read, and a 2 GiB streamed upload grows the server's memory by less than 64 MiB."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy.orm import Session

from app.auth.service import create_token
from app.db import make_engine
from app.tables import Challenge, Participant, Phase, Team, TestSet, TokenScope, utcnow
from worker.safe_delete import discard_tree

GiB = 1024**3
MiB = 1024**2


@dataclass
class LiveServer:
    base_url: str
    pid: int
    token: str
    phase_id: int
    data_dir: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _seed(url: str) -> tuple[str, int]:
    engine = make_engine(url)
    with Session(engine) as db:
        test_set = TestSet(
            name="t",
            manifest_path="/nonexistent/manifest.json",
            manifest_sha256="0" * 64,
            scoring_digest="0" * 64,
            case_count=1,
            cases={"001.tiff": {"width": 10, "height": 10, "spacing_mm": 0.00025, "groups": {}}},
        )
        challenge = Challenge(slug="live", title="Live")
        phase = Phase(
            challenge=challenge,
            slug="p",
            title="P",
            test_set=test_set,
            allowed_kinds=["predictions", "container"],
            opens_at=utcnow() - timedelta(days=1),
            closes_at=utcnow() + timedelta(days=1),
        )
        team = Team(name="streamers", contact_email="s@example.org", is_approved=True)
        participant = Participant(team=team, email="s@example.org", password_hash="x")
        db.add_all([phase, participant])
        db.flush()
        token = create_token(db, scope=TokenScope.PARTICIPANT, participant=participant).token
        db.commit()
        phase_id = phase.id
    engine.dispose()
    return token, phase_id


@pytest.fixture(params=["postgresql", "sqlite"])
def live_server(
    request: pytest.FixtureRequest,
    create_database: Callable[[str], str],
    alembic_cfg: Callable[[str], Config],
    tmp_path: Path,
) -> Iterator[LiveServer]:
    url = create_database(request.param)
    command.upgrade(alembic_cfg(url), "head")
    token, phase_id = _seed(url)
    port = _free_port()
    data_dir = tmp_path / "data"
    env = {
        **os.environ,
        "MIDOG_DATABASE_URL": url,
        "MIDOG_DATA_DIR": str(data_dir),
        "MIDOG_MAX_CONTAINER_BYTES": str(3 * GiB),
        "MIDOG_MAX_PREDICTIONS_BYTES": str(1 * MiB),
        # a broker that accepts nothing quickly: the submission must still be committed `queued`
        "MIDOG_BROKER_URL": "redis://127.0.0.1:1/0",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "app.main:create_app",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                if httpx.get(f"{base}/api/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.05)
        else:
            raise RuntimeError("uvicorn did not start")
        yield LiveServer(base, proc.pid, token, phase_id, data_dir)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        discard_tree(data_dir)


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def test_declared_length_over_the_limit_is_413_before_the_body_is_read(live_server: LiveServer) -> None:
    host, port = live_server.base_url.removeprefix("http://").split(":")
    head = (
        f"POST /api/v1/phases/{live_server.phase_id}/submissions?kind=predictions HTTP/1.1\r\n"
        f"Host: {host}\r\nAuthorization: Bearer {live_server.token}\r\n"
        "Content-Type: multipart/form-data; boundary=xyz\r\n"
        f"Content-Length: {10 * GiB}\r\n\r\n"
    ).encode()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head)  # and no body at all: the answer must not wait for it
        answer = b""
        while b'"}' not in answer:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    answer_text = answer.decode()
    assert answer_text.startswith("HTTP/1.1 413"), answer_text[:200]
    assert '"error":"payload_too_large"' in answer_text


def _image_archive(total: int) -> Iterator[bytes]:
    """A valid `docker save` archive of exactly `total` bytes (a multiple of 512), streamed: manifest.json, the
    image config and one layer of zeros filling the rest (the upload check reads headers, not layer data)."""
    config = json.dumps({"os": "linux", "architecture": "amd64", "config": {"User": "1000"}}).encode()
    manifest = json.dumps([{"Config": "config.json", "Layers": ["layer.tar"]}]).encode()

    def header(name: str, size: int) -> bytes:
        info = tarfile.TarInfo(name)
        info.size = size
        return info.tobuf(format=tarfile.USTAR_FORMAT)

    head = b""
    for name, data in (("manifest.json", manifest), ("config.json", config)):
        head += header(name, len(data)) + data + bytes(-len(data) % 512)
    layer = total - len(head) - 512 - 1024  # the layer's header, then the two zero blocks that end a tar
    yield head + header("layer.tar", layer)
    for offset in range(0, layer, MiB):
        yield bytes(min(MiB, layer - offset))
    yield bytes(1024)


# memory does not depend on the database: one backend keeps the suite's time down (~20 s for 2 GiB)
@pytest.mark.parametrize("live_server", ["postgresql"], indirect=True)
def test_two_gib_streamed_upload_keeps_server_memory_flat(live_server: LiveServer) -> None:
    boundary = "----midog-stream"
    total = int(os.environ.get("MIDOG_TEST_UPLOAD_BYTES", 2 * GiB))

    def body() -> Iterator[bytes]:
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="image.tar"\r\n'
            "Content-Type: application/x-tar\r\n\r\n"
        ).encode()
        yield from _image_archive(total)
        yield f"\r\n--{boundary}--\r\n".encode()

    baseline = _rss(live_server.pid)
    peak = baseline
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss(live_server.pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.monotonic()
    try:
        r = httpx.post(
            f"{live_server.base_url}/api/v1/phases/{live_server.phase_id}/submissions",
            params={"kind": "container"},
            headers={
                "Authorization": f"Bearer {live_server.token}",
                "Content-Type": f"multipart/form-data; boundary={boundary}",
            },
            content=body(),
            timeout=120,
        )
    finally:
        done.set()
        sampler.join()
    elapsed = time.monotonic() - started
    assert r.status_code == 201, r.text
    assert r.json()["size_bytes"] == total
    assert r.json()["evaluation"]["status"] == "queued"
    growth = peak - baseline
    print(
        f"{total / GiB:.2f} GiB upload in {elapsed:.1f} s; server RSS {baseline / MiB:.0f} MiB -> peak {peak / MiB:.0f} MiB"
    )
    assert growth < 64 * MiB, f"server memory grew by {growth / MiB:.0f} MiB"
    stored = list((live_server.data_dir / "storage" / "submissions").rglob("*.tar"))
    assert [p.stat().st_size for p in stored] == [total]
    assert list((live_server.data_dir / "storage" / "tmp").iterdir()) == []
