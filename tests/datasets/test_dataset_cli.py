"""`midog-eval dataset synth` / `info`, and `midog-eval score` reading what the generator wrote."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.cli import cli
from worker.datasets.manifest import TestSet


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "set"
    args = ["dataset", "synth", "--out", str(out), "--scanners", "2", "--cases-per-scanner", "2"]
    result = CliRunner().invoke(cli, [*args, "--size", "400x300", "--seed", "3", "--preview", "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "wrote 4 cases" in result.output
    return out


def test_synth_writes_a_set_that_info_summarises(synth_dir: Path) -> None:
    test_set = TestSet.open(synth_dir)
    assert len(test_set.cases) == 4
    assert (synth_dir / "preview.png").is_file()
    gt = test_set.ground_truth()
    result = CliRunner().invoke(cli, ["dataset", "info", str(synth_dir)])
    assert result.exit_code == 0, result.output
    total = sum(len(v) for v in gt.values())
    assert f"4 cases, 2 scanners, {total} mitotic figures" in result.output
    as_json = CliRunner().invoke(cli, ["dataset", "info", str(synth_dir), "--json"])
    rows = json.loads(as_json.output)["scanners"]
    assert [r["scanner"] for r in rows] == ["scanner-0", "scanner-1"]
    assert [r["cases"] for r in rows] == [2, 2]
    assert sum(r["mitotic_figures"] for r in rows) == total


def test_synth_refuses_a_non_empty_directory_and_bad_sizes(synth_dir: Path) -> None:
    again = CliRunner().invoke(cli, ["dataset", "synth", "--out", str(synth_dir), "--size", "400x300"])
    assert again.exit_code == 2
    assert "not empty" in again.stderr
    bad = CliRunner().invoke(cli, ["dataset", "synth", "--out", str(synth_dir / "x"), "--size", "400by300"])
    assert bad.exit_code == 2


def test_info_on_a_directory_without_manifest(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["dataset", "info", str(tmp_path)])
    assert result.exit_code == 2
    assert "no test-set manifest" in result.stderr


def test_score_reads_the_generated_ground_truth_and_groups(synth_dir: Path, tmp_path: Path) -> None:
    """Predictions 5 um off every mitotic figure plus one on every imposter: recall 1, and each imposter a FP."""
    test_set = TestSet.open(synth_dir)
    gt = test_set.ground_truth()
    midog = json.loads(test_set.midog_json_path.read_text())
    names = {img["id"]: img["file_name"] for img in midog["images"]}
    spacing = {c.name: c.spacing_mm for c in test_set.cases}
    preds: dict[str, dict[str, object]] = {}
    for name, points in gt.items():
        pts = [{"point": [x + 0.005, y, 0], "probability": 0.9, "name": "mitotic figure"} for x, y, _ in points]
        preds[name] = {"type": "Multiple points", "points": pts, "version": {"major": 1, "minor": 0}}
    imposters = 0
    for ann in midog["annotations"]:
        if ann["category_id"] == 2:
            name = names[ann["image_id"]]
            x1, y1, x2, y2 = ann["bbox"]
            point = [spacing[name] * (x1 + x2) / 2, spacing[name] * (y1 + y2) / 2, 0]
            preds[name]["points"].append({"point": point, "probability": 0.5})  # type: ignore[attr-defined]
            imposters += 1
    path = tmp_path / "predictions.json"
    path.write_text(json.dumps(preds))
    result = CliRunner().invoke(
        cli,
        [
            "score",
            "--ground-truth",
            str(test_set.ground_truth_path),
            "--predictions",
            str(path),
            "--groups",
            str(test_set.groups_path),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    total_tp = sum(c["true_positives"] for c in report["case"].values())
    total_fp = sum(c["false_positives"] for c in report["case"].values())
    assert total_tp == sum(len(v) for v in gt.values())
    assert total_fp == imposters
    assert set(report["groups"]) >= {"scanner-0", "scanner-1"}


def test_cache_command_warms_the_decoded_cache(synth_dir: Path, tmp_path: Path) -> None:
    first = CliRunner().invoke(cli, ["dataset", "cache", str(synth_dir), "--cache-dir", str(tmp_path / "c")])
    assert first.exit_code == 0, first.output
    assert first.output.startswith("4 decoded, 0 already cached")
    again = CliRunner().invoke(cli, ["dataset", "cache", str(synth_dir), "--cache-dir", str(tmp_path / "c")])
    assert again.output.startswith("0 decoded, 4 already cached")
