"""A control host and GPU hosts on one machine, as separate processes with private directories (the
`cluster` fixture; a plain module, imported by this folder's conftest).

- The control host: `midog-eval serve --no-gpu-worker` (API, cpu worker with the reconciler's beat) on a
  migrated PostgreSQL database of its own and a redis-server of its own, its data directory 0700.
- GPU hosts: `midog-eval gpu-host` processes, each with its own runner token (made by `midog-eval admin
  create-runner-token`), cache and work directory, and an environment holding no database URL. Participant
  code is the worker tests' ScriptedRunner (tests/worker/worker_test_runners.py): it replays the detections
  stored in the submitted file, "slow--" files after sleeping MIDOG_TEST_SLOW_S.
- When the tests run as root, each GPU host runs under a system user of its own (created here,
  `midog-gpu-test-<letter>`) through setpriv, with the system's Python reading the venv's packages, so that
  the control host's 0700 data directory is closed to it; otherwise under the test's uid (said in the test).
- The control host's object store is a real S3 server: SeaweedFS of the test's own (tests/seaweedfs.py), with
  MIDOG_OBJECT_STORE=s3 and the MIDOG_S3_* settings in the control host's environment only. The set's files
  are published there by content (worker.datasets.content.publish), so the GPU hosts fetch its inputs through
  presigned GET URLs; submission files (a replay file, a container image archive) through the API.
- Container submissions run through the product's container path (worker.containers.runner, podman). When
  the GPU hosts have their own uids, each host's sandboxes run through a sandbox runner service of its own
  (`midog-eval sandbox-runner`, as root, allowing only that host's uid and directory; the host gets
  MIDOG_SANDBOX_RUNNER_SOCKET), since rootless podman needs a home and subordinate ids those system users lack.
- `cluster.submit(n)` stores n model submissions over the registered set and sends their evaluations to
  the gpu queue, as the API does; `cluster.submit_container(archive)` the same for one image archive.

In CI (CI=true) a missing PostgreSQL, redis-server, setpriv or weed is a failure (tests.services.missing).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import Engine, create_engine, select
from sqlalchemy.orm import Session

from tests.live_server import free_port, wait_healthy
from tests.seaweedfs import ACCESS_KEY, BUCKET, SECRET_KEY, OwnSeaweedFS, s3_store, wait_for_writes
from tests.services import OwnRedis, wait_until
from worker.datasets.content import content_of, publish
from worker.safe_delete import discard_tree

REPO_ROOT = Path(__file__).resolve().parents[2]
TEST_RUNNERS = REPO_ROOT / "tests" / "worker"
ENTRY = "from app.cli import main; main()"
# sandbox < soft < hard < visibility < lease; a killed host's lease expires within LEASE_S.
LIMITS = {
    "MIDOG_SANDBOX_TIMEOUT_S": "20",
    "MIDOG_SOFT_TIME_LIMIT_S": "25",
    "MIDOG_TIME_LIMIT_S": "28",
    "MIDOG_VISIBILITY_TIMEOUT_S": "30",
    "MIDOG_LEASE_EXPIRY_S": "32",
    "MIDOG_LEASE_HEARTBEAT_S": "1",
    "MIDOG_MAX_ATTEMPTS": "3",
    "MIDOG_RECONCILE_INTERVAL_S": "1",
    "MIDOG_REQUEUE_AFTER_S": "5",
}
SLOW_S = "2"
SPACING_MM = 0.00025


def _base_env() -> dict[str, str]:
    keep = ("PATH", "LANG", "LC_ALL", "TZ")
    return {k: v for k, v in os.environ.items() if k in keep} | LIMITS


@dataclass
class GpuHost:
    name: str
    directory: Path
    token_id: int
    process: subprocess.Popen[bytes]
    uid: int
    env: dict[str, str]
    sandbox_runner: subprocess.Popen[bytes] | None = None

    @property
    def cache_dir(self) -> Path:
        return self.directory / "cache"

    @property
    def log(self) -> str:
        path = self.directory / "host.log"
        return path.read_text(errors="replace") if path.exists() else ""

    @property
    def runner_log(self) -> Path:
        return self.directory / "runner.log"

    def alive(self) -> bool:
        return self.process.poll() is None

    def pids(self) -> list[int]:
        """The host's processes (its session: the worker and its pool children)."""
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    if os.getsid(int(entry.name)) == self.process.pid:
                        found.append(int(entry.name))
        return found

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop_sandbox_runner(self) -> None:
        service = self.sandbox_runner
        if service is not None and service.poll() is None:
            service.terminate()
            try:
                service.wait(timeout=30)
            except subprocess.TimeoutExpired:
                service.kill()
                service.wait(timeout=10)


@dataclass
class Cluster:
    root: Path  # parent of every private directory (mode 0755: each host reaches its own)
    control_dir: Path
    base: str
    database_url: str
    broker_url: str
    control_env: dict[str, str]
    set_root: Path
    truth_hashes: set[str]
    input_hashes: set[str]
    input_bytes: int
    ground_truth: dict[str, list[list[float]]]
    phase_id: int
    team_id: int
    serve: subprocess.Popen[bytes]
    engine: Engine
    separate_uids: bool
    s3_endpoint: str
    hosts: dict[str, GpuHost] = field(default_factory=dict)
    _users: list[str] = field(default_factory=list)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", ENTRY, *args],
            env=self.control_env,
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )

    def start_host(self, name: str, *, queues: str = "gpu", extra_env: dict[str, str] | None = None) -> GpuHost:
        """A GPU host `name` (a new runner token; its directory, and so its cache, kept from an earlier host of
        that name), serving `queues`, with `extra_env` added to its environment."""
        out = self.cli("admin", "create-runner-token", name)
        token = out.stdout.strip().splitlines()[-1]
        token_id = int(out.stderr.split("runner token ", 1)[1].split()[0])
        directory = self.root / f"gpu-{name}"
        directory.mkdir(mode=0o700, exist_ok=True)
        token_file = directory / "token"
        token_file.write_text(token + "\n")
        token_file.chmod(0o600)
        uid = os.geteuid()
        prefix: list[str] = []
        python = sys.executable
        env = _base_env() | {
            "HOME": str(directory),
            "MIDOG_DATA_DIR": str(directory / "data"),
            "MIDOG_RUNNER_MODEL": "worker_test_runners:ScriptedRunner",
            "MIDOG_TEST_RUNNER_LOG": str(directory / "runner.log"),
            "MIDOG_TEST_SLOW_S": SLOW_S,
            "PYTHONPATH": os.pathsep.join([str(TEST_RUNNERS), str(REPO_ROOT)]),
            "PYTHONDONTWRITEBYTECODE": "1",
            # containers: podman, no GPU here, a short time per case
            "MIDOG_SANDBOX_BACKEND": "podman",
            "MIDOG_CONTAINER_GPU": "none",
            "MIDOG_CONTAINER_CASE_SECONDS": "15",
            "MIDOG_SANDBOX_RUNTIME_DIR": str(directory / "sandbox"),
        }
        env.update(extra_env or {})
        sandbox_runner = None
        if self.separate_uids:
            user = f"midog-gpu-test-{name}"[:32]
            uid, gid = _system_user(user)
            self._users.append(user)
            for path in (directory, token_file):
                os.chown(path, uid, gid)
            sandbox_runner, socket_path = self._start_sandbox_runner(name, directory, uid, gid)
            env["MIDOG_SANDBOX_RUNNER_SOCKET"] = str(socket_path)
            del env["MIDOG_SANDBOX_RUNTIME_DIR"]
            prefix = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--"]
            # The venv's interpreter lies under root's home (closed to other users): the system's Python of
            # the same version reads the venv's packages instead.
            python = _system_python()
            env["PYTHONPATH"] = os.pathsep.join(
                [env["PYTHONPATH"], sysconfig.get_paths()["purelib"], str(_shims(self.root))]
            )
        argv = [
            *prefix,
            python,
            "-c",
            ENTRY,
            "gpu-host",
            "--api",
            self.base,
            "--token-file",
            str(token_file),
            "--broker",
            self.broker_url,
            "--cache-dir",
            str(directory / "cache"),
            "--queues",
            queues,
            "--name",
            name,
            "--ping-interval-s",
            "0.5",
            "--cache-gib",
            "1",
        ]
        log = (directory / "host.log").open("ab")
        process = subprocess.Popen(
            argv, env=env, cwd=directory, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        host = GpuHost(name, directory, token_id, process, uid, env, sandbox_runner)
        previous = self.hosts.get(name)
        if previous is not None and previous.sandbox_runner is not sandbox_runner:
            previous.stop_sandbox_runner()
        self.hosts[name] = host
        assert wait_until(lambda: "ready." in host.log or not host.alive(), 60), host.log[-3000:]
        assert host.alive(), host.log[-3000:]
        return host

    def _start_sandbox_runner(
        self, name: str, directory: Path, uid: int, gid: int
    ) -> tuple[subprocess.Popen[bytes], Path]:
        """A sandbox runner service (root) for host `name` alone: its uid, its directory, the podman backend."""
        service_dir = self.root / f"sandbox-runner-{name}"
        service_dir.mkdir(mode=0o755, exist_ok=True)
        socket_dir = directory / "run"
        socket_dir.mkdir(mode=0o700, exist_ok=True)
        os.chown(socket_dir, uid, gid)
        socket_path = socket_dir / "runner.sock"
        with contextlib.suppress(FileNotFoundError):
            socket_path.unlink()
        runtime = service_dir / "runtime"
        argv = [sys.executable, "-c", ENTRY, "sandbox-runner", "--socket", str(socket_path)]
        argv += ["--allow", str(directory), "--worker-uid", str(uid), "--backend", "podman"]
        argv += ["--runtime-dir", str(runtime)]
        env = _base_env() | {
            "HOME": str(service_dir),
            "PYTHONPATH": str(REPO_ROOT),
            "MIDOG_DATA_DIR": str(service_dir / "data"),
        }
        service = subprocess.Popen(
            argv,
            env=env,
            cwd=service_dir,
            stdout=(service_dir / "runner.log").open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if not wait_until(lambda: socket_path.exists() or service.poll() is not None, 60):
            service.kill()
        assert socket_path.exists(), (service_dir / "runner.log").read_text(errors="replace")[-3000:]
        os.chown(socket_path, 0, gid)
        return service, socket_path

    def submit(self, count: int, *, behaviour: str = "slow", seed: int = 0, queue: str = "gpu") -> list[int]:
        """`count` model submissions (replayed detections) with one queued evaluation each, sent to `queue` (the
        gpu queue) after commit as the API sends them."""
        from app.tables import Evaluation, Submission, SubmissionKind

        storage = self.control_dir / "storage"
        ids = []
        with Session(self.engine) as session:
            for index in range(count):
                content = json.dumps(predictions_for(self.ground_truth, seed + index)).encode()
                relative = f"dist/{uuid.uuid4().hex[:8]}/{behaviour}--{index}.json"
                path = storage / relative
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(content)
                submission = Submission(
                    phase_id=self.phase_id,
                    team_id=self.team_id,
                    kind=SubmissionKind.MODEL,
                    file_path=relative,
                    sha256=hashlib.sha256(content).hexdigest(),
                    size_bytes=len(content),
                )
                evaluation = Evaluation(submission=submission, version=1)
                session.add(evaluation)
                session.flush()
                ids.append(evaluation.id)
            session.commit()
        client = _celery_client(self.broker_url)
        for evaluation_id in ids:
            client.send_task("evaluation.run", kwargs={"evaluation_id": evaluation_id}, queue=queue)
        return ids

    def submit_container(self, archive: Path) -> int:
        """One container submission of the image archive `archive`, its evaluation sent to the gpu queue."""
        from app.tables import Evaluation, Submission, SubmissionKind

        content = archive.read_bytes()
        relative = f"dist/{uuid.uuid4().hex[:8]}/{archive.name}"
        path = self.control_dir / "storage" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        with Session(self.engine) as session:
            submission = Submission(
                phase_id=self.phase_id,
                team_id=self.team_id,
                kind=SubmissionKind.CONTAINER,
                file_path=relative,
                original_filename=archive.name,
                sha256=hashlib.sha256(content).hexdigest(),
                size_bytes=len(content),
            )
            evaluation = Evaluation(submission=submission, version=1)
            session.add(evaluation)
            session.commit()
            evaluation_id = evaluation.id
        _celery_client(self.broker_url).send_task(
            "evaluation.run", kwargs={"evaluation_id": evaluation_id}, queue="gpu"
        )
        return evaluation_id

    def statuses(self, ids: list[int]) -> dict[int, str]:
        from app.tables import Evaluation

        with Session(self.engine) as session:
            rows = session.execute(select(Evaluation.id, Evaluation.status).where(Evaluation.id.in_(ids)))
            return {i: str(s) for i, s in rows}

    def wait_done(self, ids: list[int], timeout_s: float = 120) -> dict[int, str]:
        final = {"succeeded", "failed", "cancelled"}
        wait_until(lambda: all(s in final for s in self.statuses(ids).values()), timeout_s, 0.2)
        return self.statuses(ids)

    def results(self, ids: list[int]) -> dict[int, Any]:
        from app.tables import Result

        with Session(self.engine, expire_on_commit=False) as session:
            return {r.evaluation_id: r for r in session.scalars(select(Result).where(Result.evaluation_id.in_(ids)))}

    def evaluation(self, evaluation_id: int) -> Any:
        from app.tables import Evaluation

        with Session(self.engine, expire_on_commit=False) as session:
            return session.get(Evaluation, evaluation_id)

    def diagnostics(self) -> str:
        parts = [f"--- {name} ---\n{host.log[-3000:]}" for name, host in self.hosts.items()]
        for runner_log in sorted(self.root.glob("sandbox-runner-*/runner.log")):
            parts.append(f"--- {runner_log.parent.name} ---\n{runner_log.read_text(errors='replace')[-3000:]}")
        cpu_log = self.control_dir / "logs" / "worker-cpu.log"
        if cpu_log.exists():
            parts.append(f"--- control cpu worker ---\n{cpu_log.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)


_clients: dict[str, Any] = {}


def _celery_client(broker_url: str) -> Any:
    from celery import Celery

    if broker_url not in _clients:
        _clients[broker_url] = Celery("midog-eval-test-api", broker=broker_url, set_as_current=False)
        _clients[broker_url].conf.update(task_serializer="json", accept_content=["json"])
    return _clients[broker_url]


def _shims(root: Path) -> Path:
    """redis-py wants the `async_timeout` package below Python 3.11.3 (a system 3.11 may be older than the
    venv's); the standard library's asyncio.timeout is the same thing there."""
    directory = root / "pyshims"
    directory.mkdir(mode=0o755, exist_ok=True)
    (directory / "async_timeout.py").write_text("from asyncio import timeout\n\n__all__ = ['timeout']\n")
    return directory


def _system_python() -> str:
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (f"/usr/bin/{version}", f"/usr/local/bin/{version}"):
        if os.access(candidate, os.X_OK):
            return candidate
    pytest.fail(f"no system {version} for the GPU hosts' own users")


def _system_user(name: str) -> tuple[int, int]:
    with contextlib.suppress(KeyError):
        entry = pwd.getpwnam(name)
        return entry.pw_uid, entry.pw_gid
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "--user-group", name],
        check=True,
        capture_output=True,
    )
    entry = pwd.getpwnam(name)
    return entry.pw_uid, entry.pw_gid


def _can_separate_uids() -> bool:
    if os.geteuid() != 0 or not shutil.which("setpriv") or not shutil.which("useradd"):
        return False
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    return any(os.access(p, os.X_OK) for p in (f"/usr/bin/{version}", f"/usr/local/bin/{version}"))


def predictions_for(ground_truth: dict[str, list[list[float]]], seed: int) -> dict[str, Any]:
    """Detections near most figures plus a few false positives: a deterministic, non-trivial score."""
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {}
    for name, points in ground_truth.items():
        found = [[x + 0.0005, y, 0.0, 0.9] for x, y, _ in points if rng.random() < 0.75]
        found += [[0.02 + 0.01 * i, 0.03, 0.0, 0.3] for i in range(int(rng.integers(0, 3)))]
        out[name] = {
            "type": "Multiple points",
            "version": {"major": 1, "minor": 0},
            "points": [{"point": [x, y, z], "probability": p, "name": "mitotic figure"} for x, y, z, p in found],
        }
    return out


def _build_set(root: Path, count: int) -> dict[str, list[list[float]]]:
    """`count` cases over three scanners, each with an image file of random bytes (the replay reads none)."""
    from worker.datasets.manifest import Case, Manifest, write_test_set

    rng = np.random.default_rng(3)
    cases, truth = [], {}
    for index in range(count):
        name = f"{index + 1:03d}.tiff"
        image = root / "images" / name
        image.parent.mkdir(parents=True, exist_ok=True)
        image.write_bytes(rng.bytes(48 * 1024))
        scanner = f"Scanner {'ABC'[index % 3]}"
        cases.append(
            Case(
                name=name,
                image=f"images/{name}",
                scanner=scanner,
                width=2000,
                height=1500,
                spacing_mm=SPACING_MM,
                sha256=None,
                groups={"scanner": scanner},
            )
        )
        count = int(rng.integers(3, 8))
        xs, ys = rng.uniform(0.05, 0.45, count), rng.uniform(0.05, 0.33, count)
        truth[name] = [[float(x), float(y), 0.0] for x, y in zip(xs, ys, strict=True)]
    write_test_set(root, Manifest(name="distributed", cases=tuple(cases)), ground_truth=truth)
    return truth


def _seed(engine: Engine, set_root: Path, count: int) -> tuple[int, int, set[str], set[str], int]:
    from app.admin.content import record_content
    from app.scoring import fingerprint
    from app.tables import Challenge, Phase, Team
    from app.tables import TestSet as TestSetRow
    from worker.datasets.content import content_of
    from worker.datasets.manifest import scoring_digest

    content = content_of(set_root)
    digest = scoring_digest(set_root)
    with Session(engine) as session:
        test_set = TestSetRow(
            name="distributed",
            manifest_path=str(set_root / "manifest.json"),
            manifest_sha256=content.sha256_of("manifest.json") or "0" * 64,
            scoring_digest=digest,
            case_count=count,
            cases={},
        )
        phase = Phase(
            challenge=Challenge(slug="dist", title="Distributed"),
            slug="p",
            title="P",
            test_set=test_set,
            allowed_kinds=["model", "container"],
            time_limit_s=60,
            memory_limit_mb=512,
            scoring_options={},
            scoring_fingerprint=fingerprint({}, digest),
        )
        team = Team(name="team-dist", contact_email="t@example.org")
        session.add_all([phase, team])
        session.flush()
        record_content(session, test_set, content)
        session.commit()
        return (
            phase.id,
            team.id,
            {f.sha256 for f in content.truth},
            {f.sha256 for f in content.inputs},
            sum(f.size for f in content.inputs),
        )


@pytest.fixture(scope="module")
def cluster(create_database: Callable[[str], str]) -> Iterator[Cluster]:
    with running_cluster(create_database("postgresql")) as made:
        yield made


@contextlib.contextmanager
def running_cluster(database_url: str, *, cases: int = 6) -> Iterator[Cluster]:
    """A control host on the empty database `database_url` (migrated here) with a set of `cases` cases, its own
    redis and SeaweedFS; no GPU host yet (`start_host`). Everything it started is stopped at the end."""
    from tests.conftest import migrate

    root = Path(f"/tmp/midog-distributed-{uuid.uuid4().hex[:8]}")
    root.mkdir(mode=0o755)
    root.chmod(0o755)
    redis_dir = root / "redis"
    redis_dir.mkdir(mode=0o700)
    redis = OwnRedis(redis_dir)
    seaweed_dir = root / "seaweedfs"
    seaweed_dir.mkdir(mode=0o700)
    seaweedfs = OwnSeaweedFS(seaweed_dir)
    seaweedfs_started = False
    serve: subprocess.Popen[bytes] | None = None
    engine: Engine | None = None
    made: Cluster | None = None
    try:
        broker_url = redis.start()
        seaweedfs.start()
        seaweedfs_started = True
        migrate(database_url)
        control_dir = root / "control"
        control_dir.mkdir(mode=0o700)
        control_dir.chmod(0o700)
        set_root = control_dir / "test-sets" / "distributed"
        truth = _build_set(set_root, cases)
        engine = create_engine(database_url, pool_pre_ping=True)
        phase_id, team_id, truth_hashes, input_hashes, input_bytes = _seed(engine, set_root, cases)
        prefix = f"dist-{uuid.uuid4().hex[:8]}"
        store = s3_store(seaweedfs, prefix=prefix)
        wait_for_writes(store.ensure_bucket)
        publish(store, set_root, content_of(set_root))
        port = free_port()
        control_env = _base_env() | {
            "HOME": str(control_dir),
            "MIDOG_DATA_DIR": str(control_dir),
            "MIDOG_DATABASE_URL": database_url,
            "MIDOG_REDIS_URL": broker_url,
            "PYTHONPATH": str(REPO_ROOT),
            "MIDOG_OBJECT_STORE": "s3",
            "MIDOG_S3_ENDPOINT_URL": seaweedfs.endpoint,
            "MIDOG_S3_BUCKET": BUCKET,
            "MIDOG_S3_ACCESS_KEY": ACCESS_KEY,
            "MIDOG_S3_SECRET_KEY": SECRET_KEY,
            "MIDOG_S3_PREFIX": prefix,
        }
        log = control_dir / "serve.log"
        serve = subprocess.Popen(
            [sys.executable, "-c", ENTRY, "serve", "--port", str(port), "--no-gpu-worker", "--no-migrate"],
            env=control_env,
            cwd=control_dir,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base, serve, log)
        made = Cluster(
            root=root,
            control_dir=control_dir,
            base=base,
            database_url=database_url,
            broker_url=broker_url,
            control_env=control_env,
            set_root=set_root,
            truth_hashes=truth_hashes,
            input_hashes=input_hashes,
            input_bytes=input_bytes,
            ground_truth=truth,
            phase_id=phase_id,
            team_id=team_id,
            serve=serve,
            engine=engine,
            separate_uids=_can_separate_uids(),
            s3_endpoint=seaweedfs.endpoint,
        )
        yield made
    finally:
        if made is not None:
            for host in made.hosts.values():
                host.kill()
                host.stop_sandbox_runner()
        if serve is not None and serve.poll() is None:
            serve.terminate()
            try:
                serve.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(serve.pid, signal.SIGKILL)
                serve.wait(timeout=10)
        if engine is not None:
            engine.dispose()
        redis.stop()
        if seaweedfs_started:
            seaweedfs.stop()
        if made is not None:
            for user in made._users:
                subprocess.run(["userdel", user], capture_output=True, check=False)
        discard_tree(root)
        for client in _clients.values():
            client.close()
        _clients.clear()
        time.sleep(0)
