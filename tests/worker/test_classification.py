"""A MIDOG 2025 Track 2 submission scored by a real worker: the result holds the official aggregates, balanced
accuracy and ROC AUC, one row per tumour domain, and the board ranks by balanced accuracy."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from tests.classification_set import STACKS, outputs, write_classification_set
from worker.evaluation.classification import evaluate_classification, patch_counts, read_ground_truth, read_predictions

pytestmark = [pytest.mark.services]

TERMINAL = {"succeeded", "failed", "cancelled"}


def _seed(env: Any, files: list[tuple[str, dict[str, Any]]]) -> tuple[int, list[int]]:
    from sqlalchemy.orm import Session

    from app.scoring import fingerprint
    from app.tables import Challenge, Evaluation, Phase, RankingMetric, Submission, SubmissionKind, Team
    from app.tables import TestSet as TestSetRow
    from worker.datasets.manifest import scoring_digest

    tag = uuid.uuid4().hex[:8]
    root = write_classification_set(env.data_dir / f"track2-{tag}")
    options = {"task": "classification", "bootstrap": 200}
    with Session(env.engine) as session:
        test_set = TestSetRow(
            name=f"track2-{tag}",
            manifest_path=str(root / "manifest.json"),
            manifest_sha256="0" * 64,
            scoring_digest=scoring_digest(root),
            task="classification",
            case_count=len(STACKS),
            cases={},
        )
        phase = Phase(
            challenge=Challenge(slug=f"c-{tag}", title="C"),
            slug="p",
            title="P",
            test_set=test_set,
            scoring_options=options,
            ranking_metric=RankingMetric.BALANCED_ACCURACY,
            scoring_fingerprint=fingerprint(options, scoring_digest(root)),
        )
        evaluations = []
        for index, (name, content) in enumerate(files):
            relative = f"{tag}/{index}/{name}"
            path = env.storage_dir / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(content))
            team = Team(name=f"team-{tag}-{index}", contact_email="t@example.org")
            submission = Submission(
                phase=phase,
                team=team,
                kind=SubmissionKind.PREDICTIONS,
                file_path=relative,
                sha256="0" * 64,
                size_bytes=path.stat().st_size,
            )
            evaluation = Evaluation(submission=submission, version=1)
            session.add(evaluation)
            evaluations.append(evaluation)
        session.commit()
        return phase.id, [e.id for e in evaluations]


def test_a_classification_submission_is_scored_and_ranked_by_balanced_accuracy(
    worker_env: Any, start_worker: Any, tmp_path: Any
) -> None:
    phase_id, ids = _seed(worker_env, [("good.json", outputs(flip=7)), ("poor.json", outputs(flip=2))])
    start_worker(worker_env, queues="cpu")
    for evaluation_id in ids:
        worker_env.send(evaluation_id, queue="cpu")
    assert worker_env.wait_for(ids, TERMINAL, 30) == dict.fromkeys(ids, "succeeded")

    results = worker_env.results(ids)
    good = results[ids[0]]
    # the same numbers as the scoring core gives on the same files
    root = next(worker_env.data_dir.glob("track2-*"))
    truth = read_ground_truth(root / "ground-truth" / "ground-truth.json")
    (tmp_path / "good.json").write_text(json.dumps(outputs(flip=7)))
    expected = evaluate_classification(truth, read_predictions(tmp_path / "good.json", patch_counts(truth)))
    assert good.balanced_accuracy == expected.overall.balanced_accuracy
    assert good.roc_auc == expected.overall.roc_auc
    assert (good.tp, good.fp, good.fn) == (expected.overall.tp, expected.overall.fp, expected.overall.fn)
    assert good.aggregates["overall_balanced_accuracy"] == expected.overall.balanced_accuracy
    assert sorted(k for k in good.aggregates if k.startswith("domain_")) == ["domain_1", "domain_2", "domain_3"]
    assert good.aggregates["domain_2"]["roc_auc"] is None  # one class only: the official code would crash
    assert set(good.groups) == {"1", "2", "3"}
    assert good.groups["1"]["balanced_accuracy"] == expected.domains["1"].balanced_accuracy
    assert good.cases["stack_1.tiff"].keys() == {"tp", "fp", "fn", "tn"}
    low, high = good.intervals["balanced_accuracy"]
    assert low <= good.balanced_accuracy <= high
    assert good.provenance["scoring_options"]["task"] == "classification"

    from sqlalchemy.orm import Session

    from app.leaderboard.standings import compute_standings

    with Session(worker_env.engine) as session:
        board = json.loads(compute_standings(session, phase_id=phase_id).entries_json)
    assert [e["submission_id"] for e in board] == [good.submission_id, results[ids[1]].submission_id]
    assert board[0]["score"] == good.balanced_accuracy
    assert board[0]["rank_robustness"] is not None
    assert board[0]["score_ci_low"] == low
