"""`dataset import --ground-truth` with the MIDOG 2025 Track 1 ground truth: a detection set whose cases carry
the groups "tumor domain" and "roi type" (and their CSVs), `dataset info` per domain and roi type, and one-line
errors for a malformed 2025 file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

from app.cli import cli
from worker.datasets.manifest import TestSet
from worker.evaluation.io import load_ground_truth

GT = {
    "001.tiff": {"annotations": [[0.01, 0.002, 0], [0.003, 0.004, 0]], "tumor domain": 0, "roi type": "hotspot"},
    "002.tiff": {"annotations": [[0.005, 0.005, 0]], "tumor domain": 3, "roi type": "challenging"},
    "003.tiff": {"annotations": [], "tumor domain": 0, "roi type": "random"},
}


@pytest.fixture
def images(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for name in GT:
        px_per_cm = 1e4 / 0.25
        tifffile.imwrite(
            folder / name,
            np.zeros((40, 60, 3), np.uint8),
            photometric="rgb",
            resolution=(px_per_cm, px_per_cm),
            resolutionunit="CENTIMETER",
        )
    return folder


def _import(gt: Any, images: Path, tmp_path: Path, out: str = "set") -> Any:
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    return CliRunner().invoke(
        cli,
        ["dataset", "import", "--ground-truth", str(path), "--images", str(images), "--out", str(tmp_path / out),
         "--default-scanner", "unknown"],
    )  # fmt: skip


def test_track1_2025_ground_truth_becomes_a_detection_set_with_groups(images: Path, tmp_path: Path) -> None:
    result = _import(GT, images, tmp_path)
    assert result.exit_code == 0, result.output
    out = tmp_path / "set"
    test_set = TestSet.open(out)
    assert test_set.task == "detection"
    assert [c.groups for c in test_set.cases] == [
        {"scanner": "unknown", "tumor domain": "0", "roi type": "hotspot"},
        {"scanner": "unknown", "tumor domain": "3", "roi type": "challenging"},
        {"scanner": "unknown", "tumor domain": "0", "roi type": "random"},
    ]
    assert json.loads(test_set.ground_truth_path.read_text()) == GT  # copied as it is: the scorer reads it
    assert load_ground_truth(test_set.ground_truth_path).labels["002.tiff"] == {
        "tumor domain": "3",
        "roi type": "challenging",
    }
    source = test_set.manifest.source
    assert (source["variant"], source["tumor_domains"], source["roi_types"]) == (
        "2025", ["0", "3"], ["challenging", "hotspot", "random"],
    )  # fmt: skip
    assert (out / "ground-truth" / "groups-tumor_domain.csv").read_text() == (
        "image,group\n001.tiff,0\n002.tiff,3\n003.tiff,0\n"
    )
    assert (out / "ground-truth" / "groups-roi_type.csv").read_text().splitlines()[1] == "001.tiff,hotspot"
    info = CliRunner().invoke(cli, ["dataset", "info", str(out)])
    assert info.exit_code == 0, info.output
    assert "3 cases, 1 scanners, 3 mitotic figures" in info.output
    assert "tumor domain: 0 (2 cases, 2 MF), 3 (1 cases, 1 MF)" in info.output
    assert "roi type: challenging (1 cases, 1 MF), hotspot (1 cases, 2 MF), random (1 cases, 0 MF)" in info.output
    obj = json.loads(CliRunner().invoke(cli, ["dataset", "info", str(out), "--json"]).output)
    assert obj["groups"]["tumor domain"] == [
        {"value": "0", "cases": 2, "mitotic_figures": 2},
        {"value": "3", "cases": 1, "mitotic_figures": 1},
    ]


def test_the_2022_variant_keeps_its_manifest(images: Path, tmp_path: Path) -> None:
    result = _import({name: v["annotations"] for name, v in GT.items()}, images, tmp_path)
    assert result.exit_code == 0, result.output
    test_set = TestSet.open(tmp_path / "set")
    assert "variant" not in test_set.manifest.source
    assert all(c.groups == {"scanner": "unknown"} for c in test_set.cases)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda g: g["002.tiff"].update({"tumor domain": "three"}), "gt.json: 002.tiff: tumor domain: expected an integer"),
        (lambda g: g["002.tiff"].update({"tumor domain": True}), "gt.json: 002.tiff: tumor domain: expected an integer"),
        (lambda g: g["001.tiff"].update({"roi type": "hot"}), "001.tiff: roi type: expected one of hotspot, challenging, random"),
        (lambda g: g["003.tiff"].pop("annotations"), 'gt.json: 003.tiff: missing "annotations"'),
        (lambda g: g.update({"003.tiff": []}), "gt.json: 003.tiff: mixes the 2022 variant"),
        (lambda g: g["001.tiff"].update({"scanner": ["a"]}), "001.tiff: scanner: expected a string or a number"),
        (lambda g: g["001.tiff"].update({"annotations": [[1, 2]]}), "gt.json: 001.tiff[0]: expected 3 finite numbers"),
    ],
)  # fmt: skip
def test_a_malformed_2025_ground_truth_gives_one_line(images: Path, tmp_path: Path, edit: Any, message: str) -> None:
    gt = json.loads(json.dumps(GT))
    edit(gt)
    result = _import(gt, images, tmp_path)
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1
    assert message in result.stderr


def test_other_scalar_keys_become_groups_too(images: Path, tmp_path: Path) -> None:
    gt = json.loads(json.dumps(GT))
    gt["001.tiff"]["species"] = "canine"
    gt["002.tiff"]["species"] = None  # null: no group, as in the scorer
    result = _import(gt, images, tmp_path)
    assert result.exit_code == 0, result.output
    cases = TestSet.open(tmp_path / "set").cases
    assert cases[0].groups["species"] == "canine"
    assert "species" not in cases[1].groups
