"""A MIDOG 2025 Track 1 submission scored by a real worker: the result carries every official 2025 aggregate
key with the scoring core's values (FROC included), and a file the official evaluator refuses fails with the
case and the point named."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from tests.midog2025_set import CASES, detections, write_midog2025_set
from worker.evaluation.io import load_ground_truth, read_predictions
from worker.evaluation.metrics import evaluate

pytestmark = [pytest.mark.services]

TERMINAL = {"succeeded", "failed", "cancelled"}
GOOD = detections({"001.tiff": [(0.05, 0.05, 0.9), (0.2, 0.1, 0.3)], "002.tiff": [(0.05, 0.051, 0.6)]})


def _seed(env: Any, files: list[dict[str, Any]], kind: str = "predictions") -> list[int]:
    from sqlalchemy.orm import Session

    from app.scoring import fingerprint
    from app.tables import Challenge, Evaluation, Phase, Submission, SubmissionKind, Team
    from app.tables import TestSet as TestSetRow
    from worker.datasets.manifest import scoring_digest

    tag = uuid.uuid4().hex[:8]
    root = write_midog2025_set(env.data_dir / f"track1-{tag}")
    options = {"rules": "midog2025", "bootstrap": 50}
    with Session(env.engine) as session:
        phase = Phase(
            challenge=Challenge(slug=f"c-{tag}", title="C"),
            slug="p",
            title="P",
            test_set=TestSetRow(
                name=f"track1-{tag}",
                manifest_path=str(root / "manifest.json"),
                manifest_sha256="0" * 64,
                scoring_digest=scoring_digest(root),
                case_count=len(CASES),
                cases={},
            ),
            scoring_options=options,
            scoring_fingerprint=fingerprint(options, scoring_digest(root)),
        )
        evaluations = []
        for index, content in enumerate(files):
            relative = f"{tag}/{index}/predictions.json"
            path = env.storage_dir / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(content))
            submission = Submission(
                phase=phase,
                team=Team(name=f"team-{tag}-{index}", contact_email="t@example.org"),
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


def test_a_track1_submission_gets_the_official_2025_aggregates(
    worker_env: Any, start_worker: Any, tmp_path: Any
) -> None:
    pixels = detections({"003.tiff": [(130.0, 40.0, 0.5)]})  # pixel coordinates, as the official code refuses
    ids = _seed(worker_env, [GOOD, pixels])
    start_worker(worker_env, queues="cpu")
    for evaluation_id in ids:
        worker_env.send(evaluation_id, queue="cpu")
    assert worker_env.wait_for(ids, TERMINAL, 30) == {ids[0]: "succeeded", ids[1]: "failed"}

    result = worker_env.results([ids[0]])[ids[0]]
    root = next(worker_env.data_dir.glob("track1-*"))
    (tmp_path / "good.json").write_text(json.dumps(GOOD))
    expected = evaluate(
        load_ground_truth(root / "ground-truth" / "ground-truth.json", rules="midog2025"),
        read_predictions(tmp_path / "good.json", rules="midog2025"),
        rules="midog2025",
    ).to_dict()["aggregates"]
    official = ["precision", "recall", "f1_score", "froc_auc", "AP"]
    for prefix in ("tumor_0", "tumor_1", "roi_type_hotspot", "roi_type_challenging", "roi_type_random"):
        official += [f"{prefix}_{m}" for m in ("precision", "recall", "f1", "AP", "froc_auc")]
    assert [k for k in result.aggregates if k in official] == official
    assert {k: result.aggregates[k] for k in official} == {k: expected[k] for k in official}
    assert result.aggregates["froc_auc"] > 0
    assert result.aggregates["roi_type_random_froc_auc"] is None  # no detection in that set: NaN officially
    assert result.provenance["scoring_options"]["rules"] == "midog2025"

    failed = worker_env.evaluation(ids[1])
    assert "'003.tiff'" in failed.error_message
    assert "pixel coordinates" in failed.error_message
    assert not failed.infrastructure_failure


def test_a_runners_output_is_read_with_the_2025_rules(worker_env: Any, start_worker: Any) -> None:
    """Model archives and containers reach the scoring through their runner's output: it must meet the 2025
    rules too (here the test runner replays the stored file as a model's output)."""
    unnamed = detections({"001.tiff": [(0.05, 0.05, 0.9)]})
    del unnamed["001.tiff"]["points"][0]["name"]
    ids = _seed(worker_env, [GOOD, unnamed], kind="model")
    start_worker(worker_env, queues="gpu", MIDOG_RUNNER_MODEL="worker.runners:ReplayRunner")
    for evaluation_id in ids:
        worker_env.send(evaluation_id, queue="gpu")
    assert worker_env.wait_for(ids, TERMINAL, 60) == {ids[0]: "succeeded", ids[1]: "failed"}
    assert worker_env.results([ids[0]])[ids[0]].aggregates["froc_auc"] > 0
    failed = worker_env.evaluation(ids[1])
    assert '"name"' in failed.error_message
    assert "001.tiff" in failed.error_message
