"""The worked example of docs/scoring.md (Worked example), through the files and the command a user runs."""

import json
from pathlib import Path

from typer.testing import CliRunner

from app.cli import cli
from worker.evaluation.io import load_ground_truth, read_predictions
from worker.evaluation.metrics import evaluate

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "worked-example"


def test_worked_example_counts_and_aggregates_are_bit_exact() -> None:
    report = evaluate(load_ground_truth(EXAMPLE / "ground-truth.json"), read_predictions(EXAMPLE / "predictions.json"))
    doc = report.to_dict()
    assert doc["case"] == {
        "001.tiff": {"true_positives": 1, "false_negatives": 1, "false_positives": 1},
        "002.tiff": {"true_positives": 1, "false_negatives": 0, "false_positives": 0},
        "003.tiff": {"true_positives": 0, "false_negatives": 1, "false_positives": 0},
        "004.tiff": {"true_positives": 0, "false_negatives": 0, "false_positives": 1},
    }
    agg = doc["aggregates"]
    assert (agg["true_positives"], agg["false_negatives"], agg["false_positives"]) == (2, 2, 2)
    assert agg["precision"] == 0.49999987500003124
    assert agg["recall"] == 0.49999987500003124
    assert agg["f1_score"] == 0.5000000624999923


def test_score_command_writes_metrics_json(tmp_path: Path) -> None:
    out = tmp_path / "metrics.json"
    result = CliRunner().invoke(
        cli,
        [
            "score",
            "--ground-truth",
            str(EXAMPLE / "ground-truth.json"),
            "--predictions",
            str(EXAMPLE / "predictions.json"),
            "--groups",
            str(EXAMPLE / "groups.csv"),
            "--bootstrap",
            "200",
            "--seed",
            "3",
            "--output",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert doc["aggregates"]["f1_score"] == 0.5000000624999923
    assert set(doc["groups"]) == {"Scanner A", "Scanner B"}
    scanner_a = doc["groups"]["Scanner A"]
    assert (scanner_a["true_positives"], scanner_a["false_positives"], scanner_a["false_negatives"]) == (2, 1, 1)
    low, high = doc["aggregates"]["ci95"]
    assert 0.0 <= low <= doc["aggregates"]["f1_score"] <= high <= 1.0
    assert doc["meta"]["bootstrap"] == {"resamples": 200, "seed": 3}


def test_score_command_exits_2_with_one_line_naming_the_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"001.tiff": {"type": "Multiple points", "points": [{"point": [0.1, NaN, 0]}]}}')
    result = CliRunner().invoke(
        cli, ["score", "--ground-truth", str(EXAMPLE / "ground-truth.json"), "--predictions", str(bad)]
    )
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "bad.json" in lines[0]
    assert "NaN" in lines[0]


def test_score_command_reports_missing_cases_by_name(tmp_path: Path) -> None:
    partial = tmp_path / "partial.json"
    partial.write_text('{"001.tiff": {"type": "Multiple points", "points": []}}')
    args = ["score", "--ground-truth", str(EXAMPLE / "ground-truth.json"), "--predictions", str(partial)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert "'002.tiff', '003.tiff', '004.tiff'" in result.stderr
    skipped = CliRunner().invoke(cli, [*args, "--missing-cases", "skip"])
    assert skipped.exit_code == 0
    assert list(json.loads(skipped.stdout)["case"]) == ["001.tiff"]
