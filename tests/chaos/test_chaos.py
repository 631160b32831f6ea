"""The chaos suite: SIGKILL at each stage of each submission kind, and service restarts, with real processes.

Every scenario runs `midog-eval serve` (the embedded default unless it says production), kills something in
the middle of real work, and ends with the same checks:
- the evaluation ends `succeeded` (or `failed` with a reason) within the bound the scenario states;
- exactly one result for the submission, and one leaderboard entry;
- once serve is stopped, no process of its tree is left (pids with their start times, checked for 10 s);
- nothing is mounted under the data or sandbox runtime directories (`findmnt`);
- the sentinels over every directory a model run mounts (the interpreter's installation, the virtual
  environment, the worker package, the test set's images) are unchanged, hashed before and after.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.host_checks import host_mounts_under, sentinels
from tests.live_server import REPO_ROOT, descendants, free_port, organiser_headers, wait_gone, wait_healthy, worker_pids
from tests.sandbox.images import RunProcesses
from tests.services import own_postgres, own_redis

pytestmark = [pytest.mark.slow, pytest.mark.chaos]

SANDBOX_UID = 10001
# Production reconciles every 60 s; the production scenario states a faster cadence to keep the suite short.
# The embedded scenarios run with serve's own embedded defaults (every 5 s, re-send after 10 s).
FAST_RECOVERY = {"MIDOG_RECONCILE_INTERVAL_S": "1", "MIDOG_REQUEUE_AFTER_S": "2"}
MODEL_RUN_BOUND_S = 180  # the acceptance bound for a gpu worker killed mid-run, embedded default
# How long a killed process's tree, or a sandboxed run, may outlive it: generous, as other jobs may load the
# machine (the kill itself is immediate; the bound only covers the kernel and the reaper getting CPU time).
GONE_BOUND_S = 60
SCORING_BOUND_S = 90
BOARD_BOUND_S = 5  # from the result's commit to the rebuilt board


# --- the server, its processes, mounts and sentinels ----------------------------------------------------


class ChaosServer:
    """`midog-eval serve` that a scenario may kill and start again on the same data directory and port."""

    def __init__(self, tmp_path: Path, *, gpu: bool, runtime_dir: Path | None = None, **environment: str) -> None:
        self.tmp_path = tmp_path
        self.data_dir = tmp_path / "var"
        self.runtime_dir = runtime_dir
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = tmp_path / "serve.log"
        self.gpu = gpu
        env = {
            k: v for k, v in os.environ.items() if not k.startswith("MIDOG_") and k not in {"DATABASE_URL", "REDIS_URL"}
        }
        env.update(MIDOG_DATA_DIR=str(self.data_dir), MIDOG_MODEL_GPU="none", MIDOG_MODEL_CPUS="1", **environment)
        if runtime_dir is not None:
            env.update(MIDOG_SANDBOX_BACKEND="bwrap", MIDOG_SANDBOX_RUNTIME_DIR=str(runtime_dir))
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None
        self._admin: dict[str, str] | None = None
        self.runs: list[RunProcesses] = []  # the sandboxed runs of each start of serve, and only those

    def sandbox_left(self) -> list[int]:
        """Processes of this server's sandboxed runs still alive (its own runs only, never another test's)."""
        if self.process is not None:
            self.runs[-1].look()
        return sorted({pid for runs in self.runs for pid in runs.left()})

    def start(self) -> ChaosServer:
        argv = [sys.executable, "-c", "from app.cli import main; main()", "serve", "--port", str(self.port)]
        argv += [] if self.gpu else ["--no-gpu-worker"]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                argv, cwd=REPO_ROOT, env=self.env, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True
            )
        self.runs.append(RunProcesses(self.process.pid, SANDBOX_UID))
        wait_healthy(self.base, self.process, self.log)
        return self

    def _end(self, sig: int) -> None:
        assert self.process is not None
        self.runs[-1].look()
        tree = descendants(self.process.pid)
        self.process.send_signal(sig)
        self.process.wait(timeout=GONE_BOUND_S)
        assert wait_gone(tree, GONE_BOUND_S) == [], f"processes outlived serve: {tree}"
        self.process = None

    def kill(self) -> None:
        """SIGKILL of serve: nothing of its tree may outlive it by more than GONE_BOUND_S."""
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        self._end(signal.SIGTERM)

    def admin(self) -> dict[str, str]:
        if self._admin is None:
            self._admin = organiser_headers(self.env)
        return self._admin

    def logs(self) -> str:
        parts = [self.log.read_text(errors="replace")[-3000:]]
        for name in ("worker-cpu.log", "worker-gpu.log"):
            path = self.data_dir / "logs" / name
            if path.exists():
                parts.append(f"--- {name} ---\n{path.read_text(errors='replace')[-5000:]}")
        return "\n".join(parts)

    def worker_pid(self, queue: str) -> int:
        """The worker main process of `queue` that serve started."""
        assert self.process is not None
        [pid] = worker_pids(self.process.pid, queue)
        return pid


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(p) for p in (task / "children").read_text().split()]
    return found


# --- the organiser's and the participant's side ---------------------------------------------------------


def open_phase(server: ChaosServer, test_set: Path, *, kinds: list[str], options: dict[str, Any] | None = None) -> int:
    admin = server.admin()
    with httpx.Client(base_url=server.base, timeout=60) as client:
        registered = client.post("/api/v1/admin/test-sets", json={"name": "set", "path": str(test_set)}, headers=admin)
        assert registered.status_code == 201, registered.text
        challenge = client.post("/api/v1/admin/challenges", json={"slug": "chaos", "title": "Chaos"}, headers=admin)
        body: dict[str, Any] = {
            "slug": "p",
            "title": "P",
            "test_set_id": registered.json()["id"],
            "allowed_kinds": kinds,
        }
        if options is not None:
            body["scoring_options"] = options
        phase = client.post(f"/api/v1/admin/challenges/{challenge.json()['id']}/phases", json=body, headers=admin)
        assert phase.status_code == 201, phase.text
        return int(phase.json()["id"])


def register(server: ChaosServer, name: str = "Team") -> dict[str, str]:
    team = httpx.post(
        f"{server.base}/api/v1/auth/register",
        json={"team_name": name, "email": f"{name.lower()}@example.org", "password": "a-long-password"},
        timeout=30,
    )
    assert team.status_code == 201, team.text
    return {"Authorization": f"Bearer {team.json()['token']['token']}"}


def submit(server: ChaosServer, phase_id: int, team: dict[str, str], kind: str, name: str, content: bytes) -> int:
    response = httpx.post(
        f"{server.base}/api/v1/phases/{phase_id}/submissions",
        params={"kind": kind},
        headers=team,
        files={"file": (name, content)},
        timeout=120,
    )
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def evaluation(server: ChaosServer, submission_id: int) -> dict[str, Any]:
    body = httpx.get(f"{server.base}/api/v1/admin/submissions/{submission_id}", headers=server.admin(), timeout=30)
    return dict(body.json())


def wait_status(server: ChaosServer, submission_id: int, wanted: set[str], timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            body = evaluation(server, submission_id)
        except httpx.HTTPError:
            body = {}
        if (body.get("evaluation") or {}).get("status") in wanted:
            return body
        time.sleep(0.2)
    raise AssertionError(f"submission {submission_id} not {wanted} within {timeout_s:.0f} s: {body}\n{server.logs()}")


def assert_one_result(server: ChaosServer, phase_id: int, submission_id: int) -> None:
    body = evaluation(server, submission_id)
    results = [e for e in body["evaluations"] if e["result"] is not None]
    assert len(results) == 1, body["evaluations"]
    # The board is rebuilt just after the result commits (not inside that transaction): allow it a moment.
    deadline = time.monotonic() + BOARD_BOUND_S
    while True:
        board = httpx.get(f"{server.base}/api/v1/phases/{phase_id}/leaderboard", timeout=30).json()
        shown = [e["submission_id"] for e in board["entries"]].count(submission_id)
        if shown or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert shown == 1, f"{board}\n{server.logs()}"


def wait_model_running(server: ChaosServer, submission_id: int) -> None:
    """Until participant code runs in this server's sandbox (processes of the sandbox uid under serve) and has
    had a second to get going."""
    assert server.runs[-1].wait_started(120), f"no model run started\n{server.logs()}"
    time.sleep(1.0)
    assert evaluation(server, submission_id)["evaluation"]["status"] == "running"


@pytest.fixture
def model_server(tmp_path: Path, runtime_dir: Path) -> Iterator[ChaosServer]:
    server = ChaosServer(tmp_path, gpu=True, runtime_dir=runtime_dir)
    yield server.start()
    if server.process is not None:
        server.stop()


def start_model_run(
    server: ChaosServer, model_set: Path, archive: bytes
) -> tuple[int, int, float, dict[Path, tuple[int, str]]]:
    """A model phase, a team, the sentinels, and the archive submitted and running in the sandbox:
    (phase id, submission id, time of the submission, sentinels)."""
    phase_id = open_phase(server, model_set, kinds=["model"])
    team = register(server)
    before = sentinels(model_set / "images")
    started = time.monotonic()
    submission_id = submit(server, phase_id, team, "model", "cnn.zip", archive)
    wait_model_running(server, submission_id)
    assert host_mounts_under(server.data_dir, server.runtime_dir or server.data_dir) == []
    return phase_id, submission_id, started, before


def finish_model_scenario(
    server: ChaosServer,
    phase_id: int,
    submission_id: int,
    started: float,
    model_set: Path,
    before: dict[Path, tuple[int, str]],
) -> None:
    body = wait_status(server, submission_id, {"succeeded", "failed"}, MODEL_RUN_BOUND_S - (time.monotonic() - started))
    assert body["evaluation"]["status"] == "succeeded", f"{body['evaluation']}\n{server.logs()}"
    assert_one_result(server, phase_id, submission_id)
    elapsed = time.monotonic() - started
    server.stop()
    assert server.sandbox_left() == []
    assert host_mounts_under(server.data_dir, server.runtime_dir or server.data_dir) == []
    assert sentinels(model_set / "images") == before, "a mounted source changed"
    print(f"ended succeeded {elapsed:.1f} s after the submission (bound {MODEL_RUN_BOUND_S} s)")


# --- scenarios ------------------------------------------------------------------------------------------


def test_api_killed_mid_upload_leaves_no_submission_and_its_part_file_is_swept(
    tmp_path: Path, heavy_set: Any, heavy_predictions: bytes
) -> None:
    server = ChaosServer(tmp_path, gpu=False, MIDOG_SWEEP_AFTER_S="2", MIDOG_SWEEP_INTERVAL_S="1").start()
    phase_id = open_phase(server, heavy_set.root, kinds=["predictions"])
    team = register(server)
    boundary = "chaosboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="p.json"\r\n'
        "Content-Type: application/json\r\n\r\n"
    ).encode()

    def slow_body() -> Iterator[bytes]:
        yield head
        for offset in range(0, len(heavy_predictions), 64 * 1024):
            yield heavy_predictions[offset : offset + 64 * 1024]
            time.sleep(0.05)
        yield f"\r\n--{boundary}--\r\n".encode()

    def upload() -> None:
        with contextlib.suppress(httpx.HTTPError):  # the server dies under it, as intended
            httpx.post(
                f"{server.base}/api/v1/phases/{phase_id}/submissions",
                headers={**team, "Content-Type": f"multipart/form-data; boundary={boundary}"},
                content=slow_body(),
                timeout=60,
            )

    sender = threading.Thread(target=upload)
    sender.start()
    tmp = server.data_dir / "storage" / "tmp"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any(p.stat().st_size > 512 * 1024 for p in tmp.glob("*.part")):
        time.sleep(0.05)
    assert list(tmp.glob("*.part")), "the upload never started streaming"
    server.kill()
    sender.join(timeout=60)
    assert list(tmp.glob("*.part")), "the interrupted upload's temp file is what the sweeper must remove"

    server.start()
    deadline = time.monotonic() + 20
    while list(tmp.glob("*.part")) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert list(tmp.glob("*.part")) == [], f"the sweeper left the interrupted upload\n{server.logs()}"
    listed = httpx.get(f"{server.base}/api/v1/admin/submissions", headers=server.admin(), timeout=30).json()
    assert listed == []
    assert not (server.data_dir / "storage" / "submissions").exists() or not any(
        (server.data_dir / "storage" / "submissions").rglob("*.*")
    )
    # The same team submits again, and is scored once.
    started = time.monotonic()
    submission_id = submit(server, phase_id, team, "predictions", "p.json", heavy_predictions)
    body = wait_status(server, submission_id, {"succeeded", "failed"}, SCORING_BOUND_S)
    assert body["evaluation"]["status"] == "succeeded"
    assert_one_result(server, phase_id, submission_id)
    print(f"resubmission scored in {time.monotonic() - started:.1f} s")
    server.stop()
    assert host_mounts_under(server.data_dir) == []


def test_cpu_worker_killed_mid_scoring_is_restarted_and_the_evaluation_succeeds_once(
    tmp_path: Path, heavy_set: Any, heavy_predictions: bytes
) -> None:
    server = ChaosServer(tmp_path, gpu=False).start()
    phase_id = open_phase(server, heavy_set.root, kinds=["predictions"], options={"bootstrap": 10_000})
    team = register(server)
    started = time.monotonic()
    submission_id = submit(server, phase_id, team, "predictions", "p.json", heavy_predictions)
    wait_status(server, submission_id, {"running"}, 30)
    time.sleep(0.5)  # into the scoring (seconds of bootstrap)
    victim = server.worker_pid("cpu")
    os.kill(victim, signal.SIGKILL)
    body = wait_status(server, submission_id, {"succeeded", "failed"}, SCORING_BOUND_S)
    assert body["evaluation"]["status"] == "succeeded", body["evaluation"]
    assert body["evaluations"][-1]["attempt"] >= 2, "the killed run was not the one that finished"
    assert server.worker_pid("cpu") != victim
    assert_one_result(server, phase_id, submission_id)
    print(f"ended succeeded {time.monotonic() - started:.1f} s after the submission (bound {SCORING_BOUND_S} s)")
    server.stop()
    assert host_mounts_under(server.data_dir) == []


@pytest.mark.parametrize("victim", ["main", "pool-child"])
def test_gpu_worker_killed_mid_model_run(
    model_server: ChaosServer, model_set: Path, reference_cnn_zip: bytes, victim: str
) -> None:
    """R10: no mount in the host's namespace during the run nor after the SIGKILL; the run ends succeeded."""
    phase_id, submission_id, started, before = start_model_run(model_server, model_set, reference_cnn_zip)
    main = model_server.worker_pid("gpu")
    pool = [pid for pid in children(main) if b"python" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert len(pool) == 1, pool
    run = descendants(pool[0]) | {pool[0]: descendants(main)[pool[0]]}  # the pool child and the sandboxed run
    sandboxed = RunProcesses(pool[0], SANDBOX_UID)
    assert sandboxed.look(), "the sandboxed run is not under the pool child"
    os.kill(main if victim == "main" else pool[0], signal.SIGKILL)
    assert wait_gone(run, GONE_BOUND_S) == [], "the model run outlived the process that ran it"
    # Only this run's processes (its cgroup), not every process of the sandbox uid on the machine.
    assert sandboxed.wait_gone(GONE_BOUND_S) == [], "the sandboxed run outlived the process that ran it"
    assert host_mounts_under(model_server.data_dir, model_server.runtime_dir or model_server.data_dir) == []
    finish_model_scenario(model_server, phase_id, submission_id, started, model_set, before)


def test_serve_killed_mid_model_run_and_restarted(
    model_server: ChaosServer, model_set: Path, reference_cnn_zip: bytes
) -> None:
    phase_id, submission_id, started, before = start_model_run(model_server, model_set, reference_cnn_zip)
    model_server.kill()  # checks that nothing of its tree is left after GONE_BOUND_S
    assert model_server.sandbox_left() == []
    assert host_mounts_under(model_server.data_dir, model_server.runtime_dir or model_server.data_dir) == []
    assert sentinels(model_set / "images") == before
    model_server.start()
    finish_model_scenario(model_server, phase_id, submission_id, started, model_set, before)


def test_production_postgresql_and_redis_restarted_mid_run(
    tmp_path: Path, heavy_set: Any, heavy_predictions: bytes
) -> None:
    """The production configuration (PostgreSQL, Redis): each service restarted while a submission is scored."""
    from tests.worker.conftest import migrate

    with own_postgres() as postgres, own_redis(tmp_path) as redis_server:
        migrate(postgres.url)
        redis_url = redis_server.start()
        server = ChaosServer(
            tmp_path, gpu=False, DATABASE_URL=postgres.url, REDIS_URL=redis_url, **FAST_RECOVERY
        ).start()
        try:
            phase_id = open_phase(server, heavy_set.root, kinds=["predictions"], options={"bootstrap": 10_000})
            for index, restart in enumerate(("postgresql", "redis")):
                team = register(server, f"Team{index}")
                started = time.monotonic()
                submission_id = submit(server, phase_id, team, "predictions", "p.json", heavy_predictions)
                wait_status(server, submission_id, {"running"}, 30)
                if restart == "postgresql":
                    postgres.stop()
                    time.sleep(2)
                    postgres.start()
                else:
                    redis_server.stop()  # no persistence: every queued message and unacked delivery is lost
                    time.sleep(2)
                    redis_server.start()
                body = wait_status(server, submission_id, {"succeeded", "failed"}, SCORING_BOUND_S)
                assert body["evaluation"]["status"] == "succeeded", f"{restart}: {body['evaluation']}"
                assert_one_result(server, phase_id, submission_id)
                print(f"{restart} restarted: succeeded {time.monotonic() - started:.1f} s after the submission")
        finally:
            if server.process is not None:
                server.stop()
        assert host_mounts_under(server.data_dir) == []
