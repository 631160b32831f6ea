"""`midog-eval score --task classification` as a user runs it (a whole process): the official Track 2 keys with
the scoring core's values, and one line naming the stack and patch for a file the official evaluator refuses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.classification_set import outputs, write_classification_set
from worker.evaluation.classification import evaluate_classification, patch_counts, read_ground_truth, read_predictions


def _score(*args: str) -> subprocess.CompletedProcess[str]:
    code = "import sys; from app.cli import main; sys.argv = ['midog-eval', *sys.argv[1:]]; main()"
    return subprocess.run([sys.executable, "-c", code, "score", *args], capture_output=True, text=True)


def test_classification_prints_every_official_key_with_the_cores_values(tmp_path: Path) -> None:
    truth = write_classification_set(tmp_path / "set") / "ground-truth" / "ground-truth.json"
    predictions = tmp_path / "predictions.json"
    predictions.write_text(json.dumps(outputs(flip=5)))
    done = _score("--task", "classification", "--ground-truth", str(truth), "--predictions", str(predictions))
    assert done.returncode == 0, done.stderr
    aggregates = json.loads(done.stdout)["aggregates"]
    overall = ["sensitivity", "specificity", "balanced_accuracy", "roc_auc", "accuracy"]
    domains = sorted(k for k in aggregates if k.startswith("domain_"))
    assert list(aggregates) == [f"overall_{m}" for m in overall] + domains
    expected = evaluate_classification(
        read_ground_truth(truth), read_predictions(predictions, patch_counts(read_ground_truth(truth)))
    ).to_dict()["aggregates"]
    assert aggregates == json.loads(json.dumps(expected))
    for domain in domains:
        assert list(aggregates[domain]) == ["sensitivity", "specificity", "balanced_accuracy", "accuracy", "roc_auc"]


def test_an_integer_confidence_exits_2_naming_stack_and_patch(tmp_path: Path) -> None:
    truth = write_classification_set(tmp_path / "set") / "ground-truth" / "ground-truth.json"
    bad = outputs()
    bad["stack_2.tiff"][1]["confidence"] = 1
    predictions = tmp_path / "bad.json"
    predictions.write_text(json.dumps(bad))
    done = _score("--task", "classification", "--ground-truth", str(truth), "--predictions", str(predictions))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert "stack_2.tiff[1]" in lines[0]
    assert "confidence must be a float" in lines[0]


def test_detection_options_are_refused_for_classification(tmp_path: Path) -> None:
    truth = write_classification_set(tmp_path / "set") / "ground-truth" / "ground-truth.json"
    predictions = tmp_path / "predictions.json"
    predictions.write_text(json.dumps(outputs()))
    args = ["--task", "classification", "--ground-truth", str(truth), "--predictions", str(predictions)]
    done = _score(*args, "--rules", "midog2025")
    assert done.returncode == 2
    assert "detection only" in done.stderr
