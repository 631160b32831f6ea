"""Reliability scenarios R1-R3 and R5-R9 of docs/reliability-security.md against real services and workers.

Each test runs real `celery worker` subprocesses on the shared Redis (a key prefix of their own) or on a
Redis/PostgreSQL the test starts itself when it must restart them, with a fresh migrated PostgreSQL
database, and the short limits of conftest.TEST_LIMITS. Model submissions run the ScriptedRunner test
double, which logs every start of participant code so that "ran once" is counted, not assumed.
R4 (misordered limits) is in test_celery_app.py.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from app.lifecycle import CRASH_LOOP_FAILURE
from tests.integration.conftest import require_bwrap
from worker.safe_delete import discard_tree

pytestmark = [pytest.mark.services, pytest.mark.slow]

TERMINAL = {"succeeded", "failed", "cancelled"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _runner_pids(env: Any, evaluation_id: int) -> list[int]:
    if not env.runner_log.exists():
        return []
    return [
        int(line.split()[1])
        for line in env.runner_log.read_text().splitlines()
        if int(line.split()[0]) == evaluation_id
    ]


def _wait(predicate: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def test_a_predictions_file_is_scored_once(worker_env: Any, start_worker: Any, predictions_for: Any) -> None:
    ids = worker_env.seed(files=[("p.json", predictions_for(worker_env.small, 1))])
    start_worker(worker_env, queues="cpu")
    worker_env.send(ids[0], queue="cpu")
    assert worker_env.wait_for(ids, TERMINAL, 20) == {ids[0]: "succeeded"}
    evaluation = worker_env.evaluation(ids[0])
    assert evaluation.attempt == 1
    assert evaluation.progress == 1.0
    assert evaluation.lease_owner is None
    assert worker_env.result_count(ids) == 1


def test_R1_a_pool_child_killed_mid_run_is_redelivered_and_scored_once(
    worker_env: Any, start_worker: Any, predictions_for: Any
) -> None:
    ids = worker_env.seed(kind="model", files=[("slow--model.json", predictions_for(worker_env.small, 2))])
    worker = start_worker(worker_env, queues="gpu", MIDOG_TEST_SLOW_S="1.5")
    worker_env.send(ids[0], queue="gpu")
    assert _wait(lambda: len(_runner_pids(worker_env, ids[0])) == 1, 15), worker.log()[-2000:]
    child = _runner_pids(worker_env, ids[0])[0]
    assert child != worker.process.pid
    os.kill(child, signal.SIGKILL)

    assert worker_env.wait_for(ids, TERMINAL, 30) == {ids[0]: "succeeded"}, worker.log()[-3000:]
    assert worker_env.result_count(ids) == 1
    pids = _runner_pids(worker_env, ids[0])
    assert len(pids) == 2  # the killed run and the redelivered one, in a fresh child
    assert pids[1] != child
    assert worker_env.evaluation(ids[0]).attempt == 2


def test_R2_a_whole_worker_killed_and_restarted_completes_after_the_visibility_timeout(
    worker_env: Any, start_worker: Any, predictions_for: Any
) -> None:
    ids = worker_env.seed(kind="model", files=[("slow--model.json", predictions_for(worker_env.small, 3))])
    first = start_worker(worker_env, queues="gpu", MIDOG_TEST_SLOW_S="1.5")
    sent_at = time.monotonic()
    worker_env.send(ids[0], queue="gpu")
    assert _wait(lambda: len(_runner_pids(worker_env, ids[0])) == 1, 15), first.log()[-2000:]
    first.kill()
    assert worker_env.statuses(ids) == {ids[0]: "running"}

    second = start_worker(worker_env, queues="gpu", MIDOG_TEST_SLOW_S="0")
    assert worker_env.wait_for(ids, TERMINAL, 40) == {ids[0]: "succeeded"}, second.log()[-3000:]
    # Redelivery came from the broker's visibility timeout (6 s after delivery; no reconciler runs here).
    assert time.monotonic() - sent_at >= 6
    assert worker_env.result_count(ids) == 1
    assert len(_runner_pids(worker_env, ids[0])) == 2
    evaluation = worker_env.evaluation(ids[0])
    assert evaluation.lease_owner is None
    assert evaluation.status == "succeeded"


def test_R3_a_duplicate_delivery_loses_the_claim_and_runs_nothing(
    worker_env: Any, start_worker: Any, predictions_for: Any
) -> None:
    ids = worker_env.seed(kind="model", files=[("slow--model.json", predictions_for(worker_env.small, 4))])
    workers = [start_worker(worker_env, queues="gpu", MIDOG_TEST_SLOW_S="2") for _ in range(2)]
    task_id = str(uuid.uuid4())
    worker_env.send(ids[0], queue="gpu", task_id=task_id)
    assert _wait(lambda: len(_runner_pids(worker_env, ids[0])) == 1, 15)
    worker_env.send(ids[0], queue="gpu", task_id=task_id)  # the same message, delivered again

    assert _wait(lambda: any("not run: held" in w.log() for w in workers), 15), [w.log()[-1500:] for w in workers]
    assert worker_env.wait_for(ids, TERMINAL, 20) == {ids[0]: "succeeded"}
    assert len(_runner_pids(worker_env, ids[0])) == 1
    assert worker_env.result_count(ids) == 1
    assert worker_env.evaluation(ids[0]).attempt == 1


def test_R5_a_job_that_always_kills_its_worker_fails_at_the_cap_and_the_next_job_runs(
    worker_env: Any, start_worker: Any, predictions_for: Any
) -> None:
    poison, healthy = worker_env.seed(
        kind="model",
        files=[
            ("crash--model.json", predictions_for(worker_env.small, 5)),
            ("replay--ok.json", predictions_for(worker_env.small, 6)),
        ],
    )
    worker = start_worker(worker_env, queues="gpu")
    worker_env.send(poison, queue="gpu")
    worker_env.send(healthy, queue="gpu")

    statuses = worker_env.wait_for([poison, healthy], TERMINAL, 60)
    assert statuses == {poison: "failed", healthy: "succeeded"}, worker.log()[-3000:]
    assert len(_runner_pids(worker_env, poison)) == 3  # MIDOG_MAX_ATTEMPTS
    assert worker_env.evaluation(poison).error_message == CRASH_LOOP_FAILURE
    assert worker_env.result_count([poison]) == 0
    assert worker_env.result_count([healthy]) == 1
    assert worker.process.poll() is None  # the worker itself survived


def test_R6_after_a_flushall_and_a_redis_restart_the_reconciler_requeues_everything_once(
    make_worker_env: Any, start_worker: Any, predictions_for: Any, own_redis: Any
) -> None:
    import redis

    url = own_redis()
    env = make_worker_env(broker_url=url)
    ids = env.seed(kind="model", files=[(f"replay--{i}.json", predictions_for(env.small, 10 + i)) for i in range(3)])
    for evaluation_id in ids:
        env.send(evaluation_id, queue="gpu")
    client = redis.Redis.from_url(url)
    assert client.llen(f"{env.key_prefix}gpu") == 3
    client.flushall()
    client.close()
    own_redis.stop()
    own_redis()  # restarted, empty

    worker = start_worker(env, queues="cpu,gpu", beat=True)
    assert env.wait_for(ids, TERMINAL, 60) == dict.fromkeys(ids, "succeeded"), worker.log()[-3000:]
    assert env.result_count(ids) == 3
    assert env.runner_starts() == dict.fromkeys(ids, 1)


def test_R7_a_row_committed_but_never_enqueued_is_picked_up_by_the_reconciler(
    worker_env: Any, start_worker: Any, predictions_for: Any
) -> None:
    ids = worker_env.seed(files=[("p.json", predictions_for(worker_env.small, 20))])
    # No message is sent: the API crashed between its commit and the enqueue.
    worker = start_worker(worker_env, queues="cpu", beat=True)
    assert worker_env.wait_for(ids, TERMINAL, 30) == {ids[0]: "succeeded"}, worker.log()[-3000:]
    assert worker_env.result_count(ids) == 1
    assert "reconcile: expired [], re-sent [" in worker.log()


def test_R8_postgresql_restarted_mid_job_the_result_write_retries_and_the_api_answers_503(
    make_worker_env: Any, start_worker: Any, predictions_for: Any, own_postgres: Any, migrate_url: Any
) -> None:
    migrate_url(own_postgres.url)
    env = make_worker_env(database_url=own_postgres.url)
    ids = env.seed(kind="model", files=[("slow--model.json", predictions_for(env.small, 30))])
    env.engine.dispose()
    limits = {
        "MIDOG_SANDBOX_TIMEOUT_S": "5",
        "MIDOG_SOFT_TIME_LIMIT_S": "15",
        "MIDOG_TIME_LIMIT_S": "16",
        "MIDOG_VISIBILITY_TIMEOUT_S": "17",
        "MIDOG_LEASE_EXPIRY_S": "18",
    }
    worker = start_worker(env, queues="gpu", MIDOG_TEST_SLOW_S="2.5", **limits)
    env.send(ids[0], queue="gpu")
    assert _wait(lambda: len(_runner_pids(env, ids[0])) == 1, 15), worker.log()[-2000:]
    own_postgres.stop()  # while participant code runs: no transaction is open
    stopped = time.monotonic()
    # Meanwhile the API answers 503 with its error body, not a traceback.
    with api_client(own_postgres.url, env.data_dir) as client:
        response = client.get("/api/v1/challenges")
    assert response.status_code == 503
    assert response.json()["error"] == "database_unavailable"
    assert "Traceback" not in response.text
    time.sleep(max(0.0, 4 - (time.monotonic() - stopped)))  # the run ends and its first result writes fail
    own_postgres.start()

    assert env.wait_for(ids, TERMINAL, 30) == {ids[0]: "succeeded"}, worker.log()[-3000:]
    assert "database unavailable" in worker.log()
    assert env.result_count(ids) == 1
    assert len(_runner_pids(env, ids[0])) == 1  # the write was retried, the inference was not


@contextlib.contextmanager
def api_client(database_url: str, data_dir: Path) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.settings import Settings

    settings = Settings(database_url=database_url, data_dir=data_dir, db_connect_timeout_s=2)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def _processes_with(marker: str) -> list[str]:
    out = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True, check=False).stdout
    return out.split()


@pytest.mark.parametrize("behaviour", ["hang", "stall"])
def test_R9_a_runner_that_never_ends_fails_with_time_limit_exceeded_and_leaves_no_process(
    worker_env: Any, start_worker: Any, predictions_for: Any, behaviour: str
) -> None:
    # hang: participant code in a child process, killed at the sandbox timeout (2 s);
    # stall: the worker process itself never returns, stopped by the soft time limit (4 s).
    ids = worker_env.seed(kind="model", files=[(f"{behaviour}--model.json", predictions_for(worker_env.small, 40))])
    worker = start_worker(worker_env, queues="gpu")
    started = time.monotonic()
    worker_env.send(ids[0], queue="gpu")
    assert worker_env.wait_for(ids, TERMINAL, 60) == {ids[0]: "failed"}, worker.log()[-3000:]
    elapsed = time.monotonic() - started
    evaluation = worker_env.evaluation(ids[0])
    assert evaluation.error_message == "time limit exceeded"
    assert elapsed < 60  # limits of 2 s and 4 s: the bound catches a run that is never stopped, under load too
    assert _processes_with(f"midog-test-hang-{ids[0]}") == []
    assert worker_env.result_count(ids) == 0
    assert len(_runner_pids(worker_env, ids[0])) == 1


def test_a_run_cancelled_meanwhile_stops_and_writes_nothing(
    worker_env: Any, start_worker: Any, predictions_for: Any
) -> None:
    from sqlalchemy import update

    from app.tables import Evaluation, EvaluationStatus, utcnow

    ids = worker_env.seed(kind="model", files=[("slow--model.json", predictions_for(worker_env.small, 50))])
    worker = start_worker(worker_env, queues="gpu", MIDOG_TEST_SLOW_S="1.5")
    worker_env.send(ids[0], queue="gpu")
    assert _wait(lambda: len(_runner_pids(worker_env, ids[0])) == 1, 15)
    with worker_env.engine.begin() as connection:  # what the organisers' cancel does
        connection.execute(
            update(Evaluation)
            .where(Evaluation.id == ids[0])
            .values(status=EvaluationStatus.CANCELLED, lease_owner=None, lease_expires_at=None, finished_at=utcnow())
        )

    assert _wait(lambda: "no longer holds its lease; stopped" in worker.log(), 15), worker.log()[-2000:]
    assert worker_env.statuses(ids) == {ids[0]: "cancelled"}
    assert worker_env.result_count(ids) == 0


# Limits long enough that only the cancel can end the sandboxed run.
PATIENT_LIMITS = {
    "MIDOG_SANDBOX_TIMEOUT_S": "120",
    "MIDOG_SOFT_TIME_LIMIT_S": "130",
    "MIDOG_TIME_LIMIT_S": "140",
    "MIDOG_VISIBILITY_TIMEOUT_S": "150",
    "MIDOG_LEASE_EXPIRY_S": "160",
    "MIDOG_LEASE_HEARTBEAT_S": "1",
}


def test_cancel_stops_a_sleeping_sandbox_within_five_seconds(
    worker_env: Any, start_worker: Any, predictions_for: Any
) -> None:
    """The organisers cancel while participant code sleeps in a real bubblewrap sandbox: the run's lease keeper
    sees it at its next renewal and stops the run; no sandboxed process is left, nothing is written."""
    require_bwrap()
    from sqlalchemy import update

    from app.tables import Evaluation, EvaluationStatus, utcnow
    from tests.sandbox.images import RunProcesses
    from worker.sandbox import SandboxSpec

    runtime = Path(tempfile.mkdtemp(prefix="midog-cancel-"))
    runtime.chmod(0o755)
    try:
        ids = worker_env.seed(kind="model", files=[("sandboxed--model.json", predictions_for(worker_env.small, 70))])
        worker = start_worker(worker_env, queues="gpu", MIDOG_TEST_SANDBOX_RUNTIME=str(runtime), **PATIENT_LIMITS)
        worker_env.send(ids[0], queue="gpu")
        # Only this worker's run (its descendants, then its cgroup), not other runs of the sandbox uid.
        run = RunProcesses(worker.process.pid, SandboxSpec.uid)
        assert run.wait_started(60), worker.log()[-3000:]
        time.sleep(2)  # well into the run: the lease has been renewed meanwhile
        assert worker_env.statuses(ids) == {ids[0]: "running"}

        cancelled_at = time.monotonic()
        with worker_env.engine.begin() as connection:  # what POST /admin/submissions/{id}/cancel does
            connection.execute(
                update(Evaluation)
                .where(Evaluation.id == ids[0])
                .values(
                    status=EvaluationStatus.CANCELLED, lease_owner=None, lease_expires_at=None, finished_at=utcnow()
                )
            )
        # Generous bounds: the worker notices at its next lease renewal (about a second), but a loaded
        # machine may delay it; the bound catches a run that is never stopped.
        assert run.wait_gone(30) == [], "the sandboxed run outlived its cancel by 30 s"
        stopped_after = time.monotonic() - cancelled_at
        assert _wait(lambda: "no longer holds its lease" in worker.log(), 30), worker.log()[-3000:]
        assert worker_env.statuses(ids) == {ids[0]: "cancelled"}
        assert worker_env.result_count(ids) == 0
        assert stopped_after < 30
        assert not (runtime / "bwrap" / f"model-{ids[0]}-test").exists()  # reaped on the way out
    finally:
        discard_tree(runtime)


def test_an_evaluation_that_cannot_be_set_up_fails_once_instead_of_looping(
    worker_env: Any, start_worker: Any, predictions_for: Any
) -> None:
    from sqlalchemy import select, update

    from app.tables import Evaluation, Phase, Submission

    ids = worker_env.seed(files=[("p.json", predictions_for(worker_env.small, 60))])
    with worker_env.engine.begin() as connection:  # an organiser detached the phase's test set
        phase_id = connection.execute(
            select(Submission.phase_id)
            .join(Evaluation, Evaluation.submission_id == Submission.id)
            .where(Evaluation.id == ids[0])
        ).scalar_one()
        connection.execute(update(Phase).where(Phase.id == phase_id).values(test_set_id=None))
    worker = start_worker(worker_env, queues="cpu", beat=True)
    worker_env.send(ids[0], queue="cpu")

    assert worker_env.wait_for(ids, TERMINAL, 20) == {ids[0]: "failed"}, worker.log()[-2000:]
    evaluation = worker_env.evaluation(ids[0])
    assert evaluation.attempt == 1
    assert "internal error" in evaluation.error_message
    assert "has no test set" in evaluation.error_detail
    time.sleep(3)  # the reconciler runs every second: nothing is re-sent for a failed row
    assert worker_env.evaluation(ids[0]).attempt == 1
    assert worker.log().count("evaluation.run[") <= 2  # received + finished lines of the one message
