"""Many submissions at once, and sharded runs, through real Celery workers on PostgreSQL and Redis."""

from __future__ import annotations

import time
from typing import Any

import pytest

pytestmark = [pytest.mark.services, pytest.mark.slow]

TERMINAL = {"succeeded", "failed", "cancelled"}
RESULT_FIELDS = ("tp", "fp", "fn", "precision", "recall", "f1", "ap", "f1_ci_low", "f1_ci_high", "groups", "cases")


def test_fifty_predictions_files_at_once_on_two_workers_are_each_scored_exactly_once(
    worker_env: Any, start_worker: Any, predictions_for: Any
) -> None:
    ids = worker_env.seed(files=[(f"p{i}.json", predictions_for(worker_env.small, 100 + i)) for i in range(50)])
    workers = [start_worker(worker_env, queues="cpu", concurrency=1) for _ in range(2)]
    for evaluation_id in ids:
        worker_env.send(evaluation_id, queue="cpu")

    statuses = worker_env.wait_for(ids, TERMINAL, 120)
    assert statuses == dict.fromkeys(ids, "succeeded"), [w.log()[-2000:] for w in workers]
    assert worker_env.result_count(ids) == 50
    assert all(worker_env.evaluation(i).attempt == 1 for i in ids)
    # Both processes took work: the test exercises two consumers, not one.
    assert all("evaluation.run" in w.log() and "succeeded" in w.log() for w in workers)
    # Distinct predictions give distinct, deterministic scores per evaluation.
    results = worker_env.results(ids)
    assert len({(r.tp, r.fp, r.fn) for r in results.values()}) > 5


def test_sharded_and_single_runs_of_the_same_submission_give_identical_results(
    worker_env: Any, start_worker: Any, predictions_for: Any
) -> None:
    content = predictions_for(worker_env.small, 7)
    options = {"bootstrap": 200, "seed": 11}
    (single,) = worker_env.seed(kind="model", files=[("replay--single.json", content)], scoring_options=options)
    (sharded,) = worker_env.seed(
        kind="model",
        files=[("replay--sharded.json", content)],
        scoring_options={**options, "shard_by": "scanner"},
    )
    workers = [start_worker(worker_env, queues="gpu") for _ in range(2)]
    start_worker(worker_env, queues="cpu")
    started = time.monotonic()
    worker_env.send(single, queue="gpu")
    worker_env.send(sharded, queue="gpu")

    statuses = worker_env.wait_for([single, sharded], TERMINAL, 90)
    assert statuses == {single: "succeeded", sharded: "succeeded"}, [w.log()[-2000:] for w in workers]
    assert time.monotonic() - started < 90
    results = worker_env.results([single, sharded])
    for name in RESULT_FIELDS:
        assert getattr(results[sharded], name) == getattr(results[single], name), name
    # sharding never changes a score, so both are ranked under the same fingerprint; the provenance tells apart
    assert results[sharded].scoring_fingerprint == results[single].scoring_fingerprint
    shards = results[sharded].provenance["runtime"]["shards"]
    assert sorted(s["cases"] for s in shards) == [2, 2, 2]
    assert all(s["runner"] == "ScriptedRunner" for s in shards)
    assert results[single].provenance["runtime"]["runner"] == "ScriptedRunner"
    assert results[single].f1_ci_low is not None
    # The sharded run really ran in three parts (one per scanner), each on its own cases.
    runs = [line.split() for line in worker_env.runner_log.read_text().splitlines()]
    shard_cases = sorted(cases for evaluation_id, _pid, cases in runs if int(evaluation_id) == sharded)
    assert shard_cases == ["001.tiff,002.tiff", "003.tiff,004.tiff", "005.tiff,006.tiff"]
    single_cases = [cases for evaluation_id, _pid, cases in runs if int(evaluation_id) == single]
    assert single_cases == [",".join(sorted(worker_env.small.ground_truth))]
