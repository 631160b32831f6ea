"""Workers report themselves (worker.heartbeat): capabilities, heartbeats, clean stops; and an evaluation
that meets a missing isolation control fails closed, at once, as an infrastructure failure (R15)."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.tables import WorkerNode

pytestmark = pytest.mark.services


def _row(env: Any, name: str) -> WorkerNode | None:
    with Session(env.engine, expire_on_commit=False) as session:
        return session.scalars(select(WorkerNode).where(WorkerNode.name.like(f"{name}@%"))).one_or_none()


def test_a_worker_reports_what_it_can_run_beats_and_says_when_it_stops(
    worker_env: Any, start_worker: Callable[..., Any]
) -> None:
    from tests.worker.conftest import wait_until

    # Containers cannot run with the bwrap backend; model archives run through the test runner.
    worker = start_worker(
        worker_env, queues="gpu", name="g", MIDOG_SANDBOX_BACKEND="bwrap", MIDOG_WORKER_HEARTBEAT_S="0.3"
    )
    assert wait_until(lambda: _row(worker_env, "g") is not None, 15), worker.log()[-2000:]
    row = _row(worker_env, "g")
    assert row is not None
    assert row.queues == "gpu"
    assert row.pid == worker.process.pid
    assert row.capabilities["kinds"] == ["model"]
    assert "podman or docker" in row.capabilities["problems"]["container"]
    assert "cannot run container submissions" in worker.log()
    first_seen = row.last_seen_at
    assert wait_until(lambda: (r := _row(worker_env, "g")) is not None and r.last_seen_at > first_seen, 10)
    assert row.stopped_at is None
    os.kill(worker.process.pid, signal.SIGTERM)  # a clean (warm) shutdown
    worker.process.wait(timeout=30)
    stopped = _row(worker_env, "g")
    assert stopped is not None
    assert stopped.stopped_at is not None


def test_a_cpu_worker_runs_predictions_only(worker_env: Any, start_worker: Callable[..., Any]) -> None:
    from tests.worker.conftest import wait_until

    start_worker(worker_env, queues="cpu", name="c")
    assert wait_until(lambda: _row(worker_env, "c") is not None, 15)
    row = _row(worker_env, "c")
    assert row is not None
    assert row.capabilities["kinds"] == ["predictions"]
    assert row.capabilities["problems"] == {}


def test_a_missing_isolation_control_fails_the_evaluation_at_once_without_spending_quota(
    worker_env: Any, start_worker: Callable[..., Any]
) -> None:
    worker = start_worker(worker_env, queues="gpu", name="g")
    [evaluation_id] = worker_env.seed(kind="model", files=[("unisolated--a.json", {})])
    worker_env.send(evaluation_id, queue="gpu")
    statuses = worker_env.wait_for([evaluation_id], {"succeeded", "failed"}, 30)
    assert statuses == {evaluation_id: "failed"}, worker.log()[-3000:]
    row = worker_env.evaluation(evaluation_id)
    assert row.attempt == 1, "retrying cannot help: it fails at the first attempt"
    assert row.infrastructure_failure is True
    assert "internal error" in row.error_message  # the participant's line names nothing of the host
    assert "no usable pids cgroup controller" in row.error_detail  # the organiser's line does
