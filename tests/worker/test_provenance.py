"""Each result records how it was produced; a test set edited on disk since registration is never scored."""

from __future__ import annotations

from typing import Any

import pytest

from app.scoring import SCORER_VERSION, canonical_options, fingerprint
from worker.datasets.manifest import scoring_digest

pytestmark = [pytest.mark.services]

TERMINAL = {"succeeded", "failed", "cancelled"}


def test_a_result_records_scorer_options_test_set_submission_and_runtime(
    worker_env: Any, start_worker: Any, predictions_for: Any
) -> None:
    options = {"rules": "midog2021", "bootstrap": 50}
    (evaluation_id,) = worker_env.seed(
        files=[("p.json", predictions_for(worker_env.small, 3))], scoring_options=options
    )
    start_worker(worker_env, queues="cpu")
    worker_env.send(evaluation_id, queue="cpu")
    assert worker_env.wait_for([evaluation_id], TERMINAL, 30) == {evaluation_id: "succeeded"}

    result = worker_env.results([evaluation_id])[evaluation_id]
    digest = scoring_digest(worker_env.small.root)
    assert result.scoring_fingerprint == fingerprint(options, digest)
    record = result.provenance
    assert record["recorded"] is True
    assert record["scorer_version"] == SCORER_VERSION
    assert record["scoring_options"] == canonical_options(options)
    assert record["test_set"]["scoring_digest"] == digest
    assert record["submission"] == {
        "kind": "predictions",
        "sha256": "0" * 64,
        "size_bytes": record["submission"]["size_bytes"],
    }
    assert record["submission"]["size_bytes"] > 0
    runtime = record["runtime"]
    assert runtime["worker"].count(":") == 1  # host:pid of the process that ran it
    assert runtime["scoring_seconds"] >= 0
    assert "started_at" in runtime


def test_a_test_set_changed_on_disk_since_registration_is_not_scored(
    worker_env: Any, start_worker: Any, predictions_for: Any
) -> None:
    from sqlalchemy import select, update

    from app.tables import Evaluation, Phase, Submission, TestSet

    (evaluation_id,) = worker_env.seed(files=[("p.json", predictions_for(worker_env.small, 4))])
    with worker_env.engine.begin() as connection:  # registered content that is no longer what lies on disk
        test_set_id = connection.execute(
            select(Phase.test_set_id)
            .join(Submission, Submission.phase_id == Phase.id)
            .join(Evaluation, Evaluation.submission_id == Submission.id)
            .where(Evaluation.id == evaluation_id)
        ).scalar_one()
        connection.execute(update(TestSet).where(TestSet.id == test_set_id).values(scoring_digest="e" * 64))
    worker = start_worker(worker_env, queues="cpu")
    worker_env.send(evaluation_id, queue="cpu")

    assert worker_env.wait_for([evaluation_id], TERMINAL, 30) == {evaluation_id: "failed"}, worker.log()[-2000:]
    evaluation = worker_env.evaluation(evaluation_id)
    assert evaluation.infrastructure_failure is True  # the platform's fault: no quota spent
    assert "changed on disk since it was registered" in evaluation.error_detail
    assert worker_env.result_count([evaluation_id]) == 0
