"""The sandbox runner service (worker.sandbox.runner_daemon): a worker has model archives run through it; the service
enforces its rules (peers, paths, uids), hands the output to the peer, and kills a run whose worker goes away.

The service runs as root (as in production). The raw protocol is spoken by a standard-library client running
as uid 10002 through setpriv (the Python installation of this test host lies where other users cannot read
it, so the full worker stack runs as root here, served as an allowed peer); sandboxed code runs as uid 10001.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.sandbox.images import RunProcesses, require_backend
from worker.safe_delete import remove_tree

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKER_UID = 10002
SANDBOX_UID = 10001

pytestmark = pytest.mark.slow


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[dict[str, Any]]:
    require_backend("bwrap")
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("the runner service runs as root and the worker as another uid (CI runs as root)")
    base = Path(tempfile.mkdtemp(prefix="midog-runner-test-"))
    base.chmod(0o755)
    data = base / "data"
    data.mkdir()
    os.chown(data, WORKER_UID, WORKER_UID)
    sets = base / "test-sets"
    from worker.datasets.synth import generate_test_set

    generate_test_set(sets / "tiny", scanners=1, cases_per_scanner=2, size=(512, 384), seed=5)
    socket_dir = base / "run"
    socket_dir.mkdir()
    socket_path = socket_dir / "runner.sock"
    runtime = base / "sandbox"
    argv = [sys.executable, "-c", "from app.cli import main; main()", "sandbox-runner", "--socket", str(socket_path)]
    argv += ["--allow", str(data), "--allow", str(sets), "--worker-uid", str(WORKER_UID), "--worker-uid", "0"]
    argv += ["--backend", "bwrap"]
    argv += ["--runtime-dir", str(runtime)]
    service = subprocess.Popen(argv, cwd=REPO_ROOT, stderr=(base / "runner.log").open("wb"))
    deadline = time.monotonic() + 30
    while not socket_path.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert socket_path.exists(), (base / "runner.log").read_text()
    os.chown(socket_path, 0, WORKER_UID)
    try:
        yield {
            "socket": socket_path,
            "data": data,
            "set": sets / "tiny",
            "runtime": runtime,
            "base": base,
            "pid": service.pid,
        }
    finally:
        service.terminate()
        service.wait(timeout=30)
        remove_tree(base)


WORKER_RUN = """
import json, sys
from pathlib import Path
from worker.model_runner import ModelArchiveRunner, ModelSettings
from worker.runners import RunRequest
socket, data, test_set, archive = sys.argv[1:5]
runner = ModelArchiveRunner(ModelSettings(cpus=1, gpu="none"))
manifest = json.loads(Path(test_set, "manifest.json").read_text())
out = runner.run(RunRequest(evaluation_id=7, kind="model", artifact=Path(archive), test_set_dir=Path(test_set),
                            cases=tuple(c["name"] for c in manifest["cases"]), output_dir=Path(data) / "out",
                            timeout_s=120))
print(json.dumps(sorted(p.name for p in out.iterdir())))
"""


def _as_worker(runner: dict[str, Any], code: str, *args: str, uid: int = WORKER_UID) -> Any:
    """`code` run by the standard-library Python of the host as `uid` (0: the project's own, as root)."""
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(runner["data"]),
        "MIDOG_SANDBOX_RUNNER_SOCKET": str(runner["socket"]),
        "MIDOG_SANDBOX_RUNTIME_DIR": str(runner["runtime"]),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    if uid == 0:
        argv = [sys.executable, "-c", code, *args]
    else:
        argv = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "/usr/bin/python3", "-c", code, *args]
    return subprocess.Popen(argv, cwd=runner["data"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _archive(runner: dict[str, Any]) -> Path:
    target = runner["data"] / "cnn"
    shutil.copytree(REPO_ROOT / "worker" / "reference" / "archives" / "cnn", target)
    for path in [target, *target.rglob("*")]:
        os.chown(path, WORKER_UID, WORKER_UID)
    return target


def test_a_model_archive_runs_through_the_service(runner: dict[str, Any]) -> None:
    archive = _archive(runner)
    args = (str(runner["socket"]), str(runner["data"]), str(runner["set"]), str(archive))
    worker = _as_worker(runner, WORKER_RUN, *args, uid=0)
    out, err = worker.communicate(timeout=300)
    assert worker.returncode == 0, err.decode()[-3000:]
    names = json.loads(out.decode().splitlines()[-1])
    assert len(names) == 2  # one detections file per case


def test_what_a_run_writes_belongs_to_the_worker_that_asked(runner: dict[str, Any]) -> None:
    args = (str(runner["socket"]), str(runner["data"]), str(runner["data"] / "o"), str(SANDBOX_UID), "quick")
    worker = _as_worker(runner, REQUEST, *args)
    out, err = worker.communicate(timeout=60)
    reply = json.loads(out.decode())
    assert "result" in reply, (reply, err.decode()[-2000:])
    assert reply["result"]["exit_code"] == 0
    written = runner["data"] / "o" / "hello.txt"
    assert written.read_text() == "hello\n"
    assert written.stat().st_uid == WORKER_UID


# The wire protocol, spoken by a standard-library client: a spec as worker.sandbox.runner_daemon.spec_to_dict writes it.
REQUEST = """
import json, socket, sys
path, source, output, uid = sys.argv[1:5]
quick = len(sys.argv) > 5
spec = {"label": "probe", "wall_seconds": 30, "uid": int(uid), "gid": int(uid), "mounts": [[source, "/in"]],
        "memory_bytes": 256 * 1024 ** 2, "pids": 64}
command = "echo hello > /output/hello.txt" if quick else "sleep 30"
with socket.socket(socket.AF_UNIX) as conn:
    conn.connect(path)
    conn.sendall(json.dumps({"op": "run", "backend": "bwrap", "spec": spec, "argv": ["/bin/sh", "-c", command],
                             "output_dir": output}).encode() + b"\\n")
    reply = b""
    while not reply.endswith(b"\\n"):
        chunk = conn.recv(65536)
        if not chunk:
            break
        reply += chunk
    print(reply.decode())
"""


@pytest.mark.parametrize(
    ("source", "uid", "refusal"),
    [
        ("/etc", SANDBOX_UID, "lies outside what this runner may mount"),
        ("DATA", WORKER_UID, "may not run as the worker's own uid"),
    ],
)
def test_the_service_refuses_what_its_rules_forbid(runner: dict[str, Any], source: str, uid: int, refusal: str) -> None:
    mount = str(runner["data"]) if source == "DATA" else source
    worker = _as_worker(runner, REQUEST, str(runner["socket"]), mount, str(runner["data"] / "o"), str(uid))
    out, err = worker.communicate(timeout=60)
    reply = json.loads(out.decode())
    assert reply["kind"] == "refused", (reply, err.decode()[-2000:])
    assert refusal in reply["error"]


def test_only_the_worker_uids_are_served(runner: dict[str, Any]) -> None:
    runner["socket"].parent.chmod(0o755)
    runner["socket"].chmod(0o666)  # reachable by anybody: the peer check alone must refuse a stranger
    other = _as_worker(
        runner,
        REQUEST,
        str(runner["socket"]),
        str(runner["data"]),
        str(runner["data"] / "o"),
        str(SANDBOX_UID),
        uid=10003,
    )
    out, err = other.communicate(timeout=60)
    reply = json.loads(out.decode())
    assert "uid 10003 may not use the sandbox runner" in reply["error"], err.decode()


def test_a_run_dies_with_the_connection_of_its_worker(runner: dict[str, Any]) -> None:
    worker = _as_worker(
        runner, REQUEST, str(runner["socket"]), str(runner["data"]), str(runner["data"] / "o"), str(SANDBOX_UID)
    )
    # The runs of this runner service only (its descendants, then their cgroups), with a bound that holds on a
    # loaded machine: the kill is immediate, the bound only covers the processes getting CPU time to die.
    run = RunProcesses(runner["pid"], SANDBOX_UID)
    assert run.wait_started(60), "the run did not start"
    worker.kill()
    worker.wait()
    assert run.wait_gone(60) == []
