"""Worker test fixtures: a tiny test set, submissions in a scratch database, real Celery worker processes.

- `small_set`: a 6-case test set over 3 scanners (no images: predictions and replayed detections only).
- `make_predictions(set, seed)`: a deterministic predictions file with hits, misses and false positives.
- `worker_env`: one migrated PostgreSQL database per test and a Redis key prefix of its own on the shared
  Redis, plus the short limits below; `seed_evaluations(...)` inserts queued evaluations there.
- `start_worker(...)`: `celery -A worker.celery_app worker` as a subprocess (killed at teardown).

In CI (CI=true) a missing PostgreSQL or Redis is a failure, never a skip (tests/conftest.py for PostgreSQL).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import Engine, create_engine, func, select

from tests.services import in_ci, wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
SHARED_REDIS_URL = os.environ.get("MIDOG_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

# sandbox < soft < hard < visibility < lease (seconds): short enough that each scenario runs in seconds.
TEST_LIMITS = {
    "MIDOG_SANDBOX_TIMEOUT_S": "2",
    "MIDOG_SOFT_TIME_LIMIT_S": "4",
    "MIDOG_TIME_LIMIT_S": "5",
    "MIDOG_VISIBILITY_TIMEOUT_S": "6",
    "MIDOG_LEASE_EXPIRY_S": "8",
    "MIDOG_MAX_ATTEMPTS": "3",
    "MIDOG_RECONCILE_INTERVAL_S": "1",
    "MIDOG_REQUEUE_AFTER_S": "2",
}
SPACING_MM = 0.00025
SCANNERS = ("Scanner A", "Scanner B", "Scanner C")


def require_redis(url: str) -> None:
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except Exception as exc:
        message = f"Redis at {url} is unreachable: {exc}"
        if in_ci():
            pytest.fail(message + " (CI requires it; .ci/services.sh starts it)")
        pytest.skip(message)


# --- test sets and predictions -------------------------------------------------------------------------


@dataclass(frozen=True)
class SmallSet:
    root: Path
    ground_truth: dict[str, list[list[float]]]
    scanners: dict[str, str]


def build_set(root: Path, *, cases_per_scanner: int = 2, seed: int = 7) -> SmallSet:
    from worker.datasets.manifest import Case, Manifest, write_test_set

    rng = np.random.default_rng(seed)
    cases: list[Case] = []
    gt: dict[str, list[list[float]]] = {}
    scanners: dict[str, str] = {}
    width, height = 2000, 1500
    index = 0
    for scanner in SCANNERS:
        for _ in range(cases_per_scanner):
            index += 1
            name = f"{index:03d}.tiff"
            cases.append(
                Case(
                    name=name,
                    image=None,
                    scanner=scanner,
                    width=width,
                    height=height,
                    spacing_mm=SPACING_MM,
                    sha256=None,
                    groups={"scanner": scanner},
                )
            )
            count = int(rng.integers(3, 9))
            xs = rng.uniform(0.05, width * SPACING_MM - 0.05, count)
            ys = rng.uniform(0.05, height * SPACING_MM - 0.05, count)
            gt[name] = [[float(x), float(y), 0.0] for x, y in zip(xs, ys, strict=True)]
            scanners[name] = scanner
    write_test_set(root, Manifest(name="small", cases=tuple(cases)), ground_truth=gt)
    return SmallSet(root=root, ground_truth=gt, scanners=scanners)


def make_predictions(small: SmallSet, seed: int) -> dict[str, Any]:
    """Hits (jittered well inside the radius), misses and false positives, with probabilities."""
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {}
    for name, points in small.ground_truth.items():
        detections = []
        for x, y, _ in points:
            if rng.random() < 0.7:
                detections.append([x + rng.normal(0, 0.001), y + rng.normal(0, 0.001), 0.0, rng.uniform(0.5, 1)])
        for _ in range(int(rng.integers(0, 3))):
            detections.append([rng.uniform(0.01, 0.49), rng.uniform(0.01, 0.37), 0.0, rng.uniform(0, 0.6)])
        out[name] = {
            "type": "Multiple points",
            "version": {"major": 1, "minor": 0},
            "points": [
                {"point": [float(x), float(y), 0.0], "probability": float(p), "name": "mitotic figure"}
                for x, y, _, p in detections
            ],
        }
    return out


@pytest.fixture(scope="session")
def small_set(tmp_path_factory: pytest.TempPathFactory) -> SmallSet:
    return build_set(tmp_path_factory.mktemp("small-set"))


# --- database, broker and rows -------------------------------------------------------------------------


@dataclass
class WorkerEnv:
    database_url: str
    broker_url: str
    key_prefix: str
    data_dir: Path
    small: SmallSet
    runner_log: Path
    extra: dict[str, str] = field(default_factory=dict)
    _engine: Engine | None = None

    @property
    def storage_dir(self) -> Path:
        return self.data_dir / "storage"

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = create_engine(self.database_url, pool_pre_ping=True)
        return self._engine

    def environ(self, **overrides: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MIDOG_")}
        env.update(TEST_LIMITS)
        env.update(
            MIDOG_DATABASE_URL=self.database_url,
            MIDOG_BROKER_URL=self.broker_url,
            MIDOG_REDIS_KEY_PREFIX=self.key_prefix,
            MIDOG_DATA_DIR=str(self.data_dir),
            MIDOG_STORAGE_DIR=str(self.storage_dir),
            MIDOG_RUNNER_MODEL="worker_test_runners:ScriptedRunner",
            MIDOG_TEST_RUNNER_LOG=str(self.runner_log),
            PYTHONPATH=os.pathsep.join([str(HERE), str(REPO_ROOT)]),
        )
        env.update(self.extra)
        env.update(overrides)
        return env

    def runner_starts(self) -> dict[int, int]:
        """evaluation id -> how many times participant code started for it."""
        counts: dict[int, int] = {}
        if self.runner_log.exists():
            for line in self.runner_log.read_text().splitlines():
                evaluation_id = int(line.split()[0])
                counts[evaluation_id] = counts.get(evaluation_id, 0) + 1
        return counts

    def seed(
        self,
        *,
        kind: str = "predictions",
        files: list[tuple[str, dict[str, Any]]],
        scoring_options: dict[str, Any] | None = None,
        time_limit_s: float = 60.0,
    ) -> list[int]:
        """One phase over the small set; one submission and one queued evaluation per (file name, content)."""
        from sqlalchemy.orm import Session

        from app.scoring import fingerprint
        from app.tables import Challenge, Evaluation, Phase, Submission, SubmissionKind, Team
        from app.tables import TestSet as TestSetRow
        from worker.datasets.manifest import scoring_digest

        self.storage_dir.mkdir(parents=True, exist_ok=True)
        tag = uuid.uuid4().hex[:8]
        with Session(self.engine) as session:
            test_set = TestSetRow(
                name=f"small-{tag}",
                manifest_path=str(self.small.root / "manifest.json"),
                manifest_sha256="0" * 64,
                scoring_digest=scoring_digest(self.small.root),
                case_count=len(self.small.ground_truth),
                cases={},
            )
            phase = Phase(
                challenge=Challenge(slug=f"c-{tag}", title="C"),
                slug="p",
                title="P",
                test_set=test_set,
                allowed_kinds=[kind],
                time_limit_s=time_limit_s,
                scoring_options=scoring_options or {},
                scoring_fingerprint=fingerprint(scoring_options or {}, scoring_digest(self.small.root)),
            )
            team = Team(name=f"team-{tag}", contact_email="t@example.org")
            evaluations = []
            for index, (name, content) in enumerate(files):
                relative = f"{tag}/{index}/{name}"
                path = self.storage_dir / relative
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(content))
                submission = Submission(
                    phase=phase,
                    team=team,
                    kind=SubmissionKind(kind),
                    file_path=relative,
                    sha256="0" * 64,
                    size_bytes=path.stat().st_size,
                )
                evaluation = Evaluation(submission=submission, version=1)
                session.add(evaluation)
                evaluations.append(evaluation)
            session.commit()
            return [e.id for e in evaluations]

    def send(self, evaluation_id: int, *, queue: str, task_id: str | None = None) -> None:
        client = celery_client(self)
        client.send_task("evaluation.run", kwargs={"evaluation_id": evaluation_id}, queue=queue, task_id=task_id)

    def statuses(self, ids: list[int]) -> dict[int, str]:
        from sqlalchemy.orm import Session

        from app.tables import Evaluation

        with Session(self.engine) as session:
            rows = session.execute(select(Evaluation.id, Evaluation.status).where(Evaluation.id.in_(ids)))
            return {i: str(s) for i, s in rows}

    def evaluation(self, evaluation_id: int) -> Any:
        from sqlalchemy.orm import Session

        from app.tables import Evaluation

        with Session(self.engine, expire_on_commit=False) as session:
            return session.get(Evaluation, evaluation_id)

    def result_count(self, ids: list[int]) -> int:
        from sqlalchemy.orm import Session

        from app.tables import Result

        with Session(self.engine) as session:
            return int(
                session.scalar(select(func.count()).select_from(Result).where(Result.evaluation_id.in_(ids))) or 0
            )

    def results(self, ids: list[int]) -> dict[int, Any]:
        from sqlalchemy.orm import Session

        from app.tables import Result

        with Session(self.engine, expire_on_commit=False) as session:
            return {r.evaluation_id: r for r in session.scalars(select(Result).where(Result.evaluation_id.in_(ids)))}

    def wait_for(self, ids: list[int], statuses: set[str], timeout_s: float) -> dict[int, str]:
        deadline = time.monotonic() + timeout_s
        current = self.statuses(ids)
        while time.monotonic() < deadline:
            current = self.statuses(ids)
            if all(s in statuses for s in current.values()):
                return current
            time.sleep(0.2)
        return current


_clients: dict[tuple[str, str], Any] = {}


def celery_client(env: WorkerEnv) -> Any:
    """A Celery client like the API's: sends by task name, configured by the worker's own settings code."""
    from celery import Celery

    from worker.celery_app import configure
    from worker.time_limits import Limits

    key = (env.broker_url, env.key_prefix)
    if key not in _clients:
        client = Celery("midog_eval_test_client")
        limits = Limits(**{name.removeprefix("MIDOG_").lower(): float(value) for name, value in TEST_LIMITS.items()})
        configure(
            client,
            broker_url=env.broker_url,
            limits=replace(limits, max_attempts=int(limits.max_attempts)),
            redis_key_prefix=env.key_prefix,
        )
        _clients[key] = client
    return _clients[key]


def migrate(url: str) -> None:
    """`alembic upgrade head` on `url` with this repository's migrations."""
    from alembic import command
    from alembic.config import Config

    cfg = Config(str(REPO_ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(REPO_ROOT / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(cfg, "head")


@pytest.fixture
def make_worker_env(
    create_database: Callable[[str], str], small_set: SmallSet, tmp_path: Path
) -> Iterator[Callable[..., WorkerEnv]]:
    """A factory: a fresh migrated PostgreSQL database and a Redis key prefix (shared Redis by default)."""
    created: list[WorkerEnv] = []

    def make(*, database_url: str | None = None, broker_url: str = SHARED_REDIS_URL) -> WorkerEnv:
        require_redis(broker_url)
        if database_url is None:
            database_url = create_database("postgresql")
            migrate(database_url)
        env = WorkerEnv(
            database_url=database_url,
            broker_url=broker_url,
            key_prefix=f"midog-test-{uuid.uuid4().hex[:10]}:",
            data_dir=tmp_path / f"data-{len(created)}",
            small=small_set,
            runner_log=tmp_path / f"runner-{len(created)}.log",
        )
        created.append(env)
        return env

    yield make
    for env in created:
        if env._engine is not None:
            env._engine.dispose()
        client = _clients.pop((env.broker_url, env.key_prefix), None)
        if client is not None:
            client.close()
        _drop_prefixed_keys(env)


def _drop_prefixed_keys(env: WorkerEnv) -> None:
    import redis

    try:
        client = redis.Redis.from_url(env.broker_url, socket_connect_timeout=2)
        keys = list(client.scan_iter(match=f"{env.key_prefix}*", count=500))
        keys += list(client.scan_iter(match=f"*{env.key_prefix}*", count=500))
        if keys:
            client.delete(*set(keys))
        client.close()
    except Exception:
        pass  # the test's own Redis may be gone already (R6)


@pytest.fixture
def worker_env(make_worker_env: Callable[..., WorkerEnv]) -> WorkerEnv:
    return make_worker_env()


# --- worker processes ----------------------------------------------------------------------------------


@dataclass
class WorkerProcess:
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def child_pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True, check=False).stdout
        return [int(p) for p in out.split()]

    def kill(self) -> None:
        """SIGKILL the main process and every pool child (the whole process group)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        """Teardown: a warm shutdown is not under test here, so the group is killed outright."""
        if self.process.poll() is None:
            self.kill()


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(
        env: WorkerEnv,
        *,
        queues: str = "cpu,gpu",
        concurrency: int = 1,
        beat: bool = False,
        name: str | None = None,
        wait_ready: bool = True,
        **overrides: str,
    ) -> WorkerProcess:
        name = name or f"w{len(started)}-{uuid.uuid4().hex[:6]}"
        log_path = tmp_path / f"{name}.log"
        argv = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "worker.celery_app",
            "worker",
            "-Q",
            queues,
            "-n",
            f"{name}@%h",
            "--loglevel",
            "INFO",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
        if "gpu" not in queues.split(","):
            argv += ["-c", str(concurrency)]
        if beat:
            argv += ["-B", "--schedule", str(tmp_path / f"{name}-beat-schedule")]
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                argv,
                cwd=REPO_ROOT,
                env=env.environ(**overrides),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        worker = WorkerProcess(process, log_path)
        started.append(worker)
        if wait_ready and not wait_until(lambda: "ready." in worker.log() or process.poll() is not None, 30):
            raise AssertionError(f"worker did not start:\n{worker.log()[-3000:]}")
        if wait_ready and process.poll() is not None:
            raise AssertionError(f"worker exited with {process.returncode}:\n{worker.log()[-3000:]}")
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture(scope="session")
def predictions_for() -> Callable[[SmallSet, int], dict[str, Any]]:
    """`make_predictions` as a fixture (test modules cannot import conftest under importlib mode)."""
    return make_predictions


@pytest.fixture(scope="session")
def migrate_url() -> Callable[[str], None]:
    """`migrate` as a fixture: `alembic upgrade head` on a URL."""
    return migrate


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """A redis-server of this test's own on a free port (the shared one is never flushed or restarted):
    call it to start it (returns the URL); `.stop` stops it."""
    from tests.services import own_redis as redis_server

    with redis_server(tmp_path) as server:

        def start() -> str:
            return server.start()

        start.stop = server.stop  # type: ignore[attr-defined]
        yield start


@pytest.fixture
def own_postgres() -> Iterator[Any]:
    """A throwaway PostgreSQL cluster on a free port that this test may stop and start at will."""
    from tests.services import own_postgres as cluster

    with cluster() as running:
        yield running
