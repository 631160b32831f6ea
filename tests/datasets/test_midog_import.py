"""Import of MIDOG-format data: MIDOG.json + tiny TIFFs round-trip, scanner maps, errors, the real MIDOG++.json."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

from app.cli import cli
from worker.datasets.errors import DatasetError
from worker.datasets.manifest import TestSet
from worker.datasets.midog import (
    load_midog_json,
    load_scanner_map,
    parse_midog_json,
    parse_scanner_csv,
    resolve_scanners,
)

MIDOGPP = Path(__file__).resolve().parents[1] / "data" / "midogpp"  # shipped: tests/data/midogpp/README.md
MIDOGPP_JSON = MIDOGPP / "MIDOG++.json"
MIDOGPP_CSV = MIDOGPP / "datasets_xvalidation.csv"

# three tiny "regions", one per MIDOG 2021 scanner range, each with its own spacing (um/px)
TIFFS = {"001.tiff": (0.2273, 60, 40), "051.tiff": (0.2304, 64, 48), "101.tiff": (0.2527, 50, 50)}


def _midog_json() -> dict[str, Any]:
    images = [
        {"id": i + 1, "file_name": name, "width": w, "height": h, "tumor_type": "human breast cancer"}
        for i, (name, (_, w, h)) in enumerate(TIFFS.items())
    ]
    annotations = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 5, 60, 55]},
        {"id": 2, "image_id": 1, "category_id": 2, "bbox": [0, 0, 50, 50]},  # hard negative: not scored
        {"id": 3, "image_id": 1, "category_id": 1, "bbox": [-20, 1.5, 30, 51.5]},  # float box, partly outside
        {"id": 4, "image_id": 2, "category_id": 2, "bbox": [3, 3, 53, 53]},
        {"id": 5, "image_id": 3, "category_id": 1, "bbox": [25, 0, 75, 50]},
    ]
    categories = [{"id": 1, "name": "mitotic figure"}, {"id": 2, "name": "not mitotic figure"}]
    return {"images": images, "categories": categories, "annotations": annotations}


@pytest.fixture
def midog_dir(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, (um, w, h) in TIFFS.items():
        px_per_cm = 1e4 / um
        tifffile.imwrite(
            src / "images" / name,
            rng.integers(0, 255, (h, w, 3), dtype=np.uint8),
            photometric="rgb",
            resolution=(px_per_cm, px_per_cm),
            resolutionunit="CENTIMETER",
        )
    (src / "MIDOG.json").write_text(json.dumps(_midog_json()))
    return src


def _invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, ["dataset", *args])


def test_midog_json_with_three_tiffs_round_trips(midog_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "set"
    result = _invoke(
        "import", "--out", str(out), "--midog-json", str(midog_dir / "MIDOG.json"),
        "--images", str(midog_dir / "images"), "--scanner-map", "midog2021",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    test_set = TestSet.open(out)
    assert [c.scanner for c in test_set.cases] == ["Hamamatsu XR", "Hamamatsu S360", "Aperio CS2"]
    assert test_set.cases[0].groups == {"scanner": "Hamamatsu XR", "tumor type": "human breast cancer"}
    gt = json.loads(test_set.ground_truth_path.read_text())
    for case in test_set.cases:
        um = TIFFS[case.name][0]
        assert case.spacing_mm == pytest.approx(um / 1000, rel=1e-9)  # from the TIFF resolution tags
        assert (test_set.root / case.image).read_bytes() == (midog_dir / "images" / case.name).read_bytes()
    sp = [c.spacing_mm for c in test_set.cases]
    # docs/scoring.md, Units and coordinates: mm = spacing * (x1 + x2) / 2, origin 0; category 2 excluded; file order kept
    assert gt == {
        "001.tiff": [[sp[0] * (10 + 60) / 2, sp[0] * (5 + 55) / 2, 0], [sp[0] * (-20 + 30) / 2, sp[0] * 26.5, 0]],
        "051.tiff": [],
        "101.tiff": [[sp[2] * 50.0, sp[2] * 25.0, 0]],
    }
    midog = json.loads(test_set.midog_json_path.read_text())
    assert sum(a["category_id"] == 2 for a in midog["annotations"]) == 2  # kept for reference, not scored
    info = _invoke("info", str(out))
    assert info.exit_code == 0
    assert "Hamamatsu XR" in info.output
    assert "3 cases, 3 scanners, 3 mitotic figures" in info.output


def test_spacing_flag_overrides_the_tags(midog_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "set"
    result = _invoke(
        "import", "--out", str(out), "--midog-json", str(midog_dir / "MIDOG.json"),
        "--images", str(midog_dir / "images"), "--default-scanner", "X", "--spacing-mm", "0.00025",
        "--link", "hardlink",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    gt = TestSet.open(out).ground_truth()
    assert gt["001.tiff"][0] == [0.00025 * 35, 0.00025 * 30, 0]


def test_the_ground_truth_is_what_the_scoring_core_reads(midog_dir: Path, tmp_path: Path) -> None:
    io = pytest.importorskip("worker.evaluation.io")
    out = tmp_path / "set"
    args = ["import", "--out", str(out), "--midog-json", str(midog_dir / "MIDOG.json")]
    result = _invoke(*args, "--images", str(midog_dir / "images"), "--scanner-map", "midog2021")
    assert result.exit_code == 0, result.output
    ours = TestSet.open(out)
    from_gt = io.load_ground_truth(ours.ground_truth_path)
    from_midog = io.load_ground_truth(ours.midog_json_path, spacing_mm={c.name: c.spacing_mm for c in ours.cases})
    for name in ("001.tiff", "051.tiff", "101.tiff"):
        a, b = _points(from_gt, name), _points(from_midog, name)
        assert np.array_equal(a, b), name


def _points(gt: Any, name: str) -> np.ndarray:
    cases = getattr(gt, "cases", gt)
    case = cases[name]
    pts = getattr(case, "points", case)
    return np.asarray(pts, dtype=float).reshape(-1, 3)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["annotations"][1].update(bbox=[1, 2, 3]), "MIDOG.json: annotations[1].bbox: expected 4 numbers"),
        (lambda d: d["annotations"][2].update(bbox=[1, 2, "x", 4]), "annotations[2].bbox: expected 4 numbers"),
        (lambda d: d["annotations"][0].update(bbox=[60, 5, 10, 55]), "annotations[0].bbox: expected [x1, y1, x2, y2]"),
        (lambda d: d["annotations"][4].update(image_id=99), "annotations[4].image_id: no image with id 99"),
        (lambda d: d["annotations"][3].pop("category_id"), "annotations[3].category_id: expected an integer"),
        (lambda d: d["annotations"][3].update(category_id=7), "annotations[3].category_id: unknown category 7"),
        (lambda d: d["images"][2].update(width=0), "MIDOG.json: images[2].width: expected a positive integer"),
        (lambda d: d["images"][1].update(file_name="../x.tiff"), "images[1].file_name: expected a plain file name"),
        (lambda d: d["images"][1].update(id=1), "images[1].id: duplicate image id 1"),
        (lambda d: d.pop("annotations"), "MIDOG.json: annotations: expected a list"),
    ],
)
def test_a_malformed_file_gives_one_line_naming_the_field(
    midog_dir: Path, tmp_path: Path, mutate: Any, message: str
) -> None:
    data = _midog_json()
    mutate(data)
    (midog_dir / "MIDOG.json").write_text(json.dumps(data))
    result = _invoke(
        "import", "--out", str(tmp_path / "set"), "--midog-json", str(midog_dir / "MIDOG.json"),
        "--images", str(midog_dir / "images"), "--scanner-map", "midog2021",
    )  # fmt: skip
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert message in result.stderr


def test_nan_and_bad_json_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "MIDOG.json"
    path.write_text('{"images": [], "annotations": [{"bbox": [NaN, 1, 2, 3]}]}')
    with pytest.raises(DatasetError, match="NaN"):
        load_midog_json(path)
    path.write_text('{"images": [')
    with pytest.raises(DatasetError, match=r"MIDOG.json: invalid JSON"):
        load_midog_json(path)


def test_missing_spacing_image_and_scanner_errors(midog_dir: Path, tmp_path: Path) -> None:
    args = ["import", "--midog-json", str(midog_dir / "MIDOG.json"), "--images", str(midog_dir / "images")]
    no_scanner = _invoke(*args, "--out", str(tmp_path / "a"))
    assert no_scanner.exit_code == 2
    assert "no scanner known for 001.tiff, 051.tiff, 101.tiff" in no_scanner.stderr
    (midog_dir / "images" / "051.tiff").unlink()
    missing = _invoke(*args, "--out", str(tmp_path / "b"), "--scanner-map", "midog2021")
    assert missing.exit_code == 2
    assert "051.tiff: no such image" in missing.stderr
    tifffile.imwrite(midog_dir / "images" / "051.tiff", np.zeros((48, 64, 3), np.uint8), photometric="rgb")
    no_tags = _invoke(*args, "--out", str(tmp_path / "c"), "--scanner-map", "midog2021")
    assert no_tags.exit_code == 2
    assert "051.tiff: no pixel spacing" in no_tags.stderr
    tifffile.imwrite(midog_dir / "images" / "051.tiff", np.zeros((10, 64, 3), np.uint8), photometric="rgb")
    wrong_size = _invoke(*args, "--out", str(tmp_path / "d"), "--scanner-map", "midog2021", "--spacing-mm", "1e-4")
    assert wrong_size.exit_code == 2
    assert "MIDOG.json: images[1]: width/height 64x48 do not match the image (64x10)" in wrong_size.stderr


def test_scanner_maps_presets_csv_and_midogpp_csv(tmp_path: Path) -> None:
    preset = load_scanner_map("midog2021")
    assert [preset.lookup(n) for n in ("001.tiff", "050.tiff", "051.tiff", "150", "200.tiff", "201.tiff")] == [
        "Hamamatsu XR", "Hamamatsu XR", "Hamamatsu S360", "Aperio CS2", "Leica GT450", None,
    ]  # fmt: skip
    plain = parse_scanner_csv("image,scanner\n001.tiff,A\n2,B\n", source="map.csv")
    assert plain.lookup("001.tiff") == "A"
    assert plain.lookup("002.tiff") == "B"
    xval = load_scanner_map(str(MIDOGPP_CSV))
    assert xval.lookup("001.tiff") == "Hamamatsu XR"  # "Hamammatsu XR" in the file
    assert xval.lookup("201.tiff") == "3D Histech"
    assert xval.lookup("151.tiff") is None
    both = resolve_scanners(["151.tiff", "201.tiff"], [preset, xval])
    assert both == {"151.tiff": "Leica GT450", "201.tiff": "3D Histech"}
    override = parse_scanner_csv("image,scanner\n151.tiff,Other\n", source="o.csv")
    assert resolve_scanners(["151.tiff"], [preset, override]) == {"151.tiff": "Other"}
    with pytest.raises(DatasetError, match=r"map.csv: header must name"):
        parse_scanner_csv("a,b\n1,2\n", source="map.csv")
    with pytest.raises(DatasetError, match="no such scanner map"):
        load_scanner_map(str(tmp_path / "nope.csv"))


def test_the_real_midogpp_json_parses_and_tumour_types_become_groups(tmp_path: Path) -> None:
    parsed = load_midog_json(MIDOGPP_JSON)
    assert len(parsed.images) == 553
    assert parsed.mitotic_figure_count == 11_937
    assert parsed.mitotic_figure_count + parsed.hard_negative_count == 26_286
    out = tmp_path / "midogpp"
    result = _invoke(
        "import", "--out", str(out), "--midog-json", str(MIDOGPP_JSON), "--annotations-only",
        "--spacing-mm", "0.00025", "--scanner-map", "midog2021", "--scanner-map", str(MIDOGPP_CSV),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "50 images have no annotation at all" in result.stderr
    test_set = TestSet.open(out)
    assert len(test_set.cases) == 553
    assert sum(len(v) for v in test_set.ground_truth().values()) == 11_937
    tumours = {c.groups["tumor type"] for c in test_set.cases}
    assert len(tumours) == 7
    assert "canine lymphosarcoma" in tumours
    assert set(test_set.manifest.scanners) == {
        "Hamamatsu XR", "Hamamatsu S360", "Aperio CS2", "Leica GT450", "3D Histech",
    }  # fmt: skip
    assert (out / "ground-truth" / "groups-tumor_type.csv").read_text().count("\n") == 554
    skipped = _invoke(
        "import", "--out", str(tmp_path / "skip"), "--midog-json", str(MIDOGPP_JSON), "--annotations-only",
        "--spacing-mm", "0.00025", "--scanner-map", str(MIDOGPP_CSV), "--skip-unannotated",
    )  # fmt: skip
    assert skipped.exit_code == 0, skipped.output
    assert len(TestSet.open(tmp_path / "skip").cases) == 503


def test_official_ground_truth_2025_variant_import(midog_dir: Path, tmp_path: Path) -> None:
    gt = {
        "001.tiff": {"annotations": [[0.01, 0.002, 0]], "tumor domain": 3, "roi type": "hotspot"},
        "051.tiff": {"annotations": [], "tumor domain": 1, "roi type": "random"},
    }
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    out = tmp_path / "set"
    result = _invoke(
        "import", "--out", str(out), "--ground-truth", str(path), "--images", str(midog_dir / "images"),
        "--scanner-map", "midog2021",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    test_set = TestSet.open(out)
    assert test_set.cases[0].groups == {"scanner": "Hamamatsu XR", "tumor domain": "3", "roi type": "hotspot"}
    assert json.loads(test_set.ground_truth_path.read_text()) == gt
    bad = copy.deepcopy(gt)
    bad["051.tiff"]["annotations"] = [[0.1, 0.2]]
    path.write_text(json.dumps(bad))
    result = _invoke(
        "import", "--out", str(tmp_path / "bad"), "--ground-truth", str(path), "--images",
        str(midog_dir / "images"), "--default-scanner", "X",
    )  # fmt: skip
    assert result.exit_code == 2
    assert "gt.json: 051.tiff[0]: expected 3 finite numbers" in result.stderr


def test_parse_midog_json_without_categories_defaults_to_category_1() -> None:
    data = _midog_json()
    del data["categories"]
    parsed = parse_midog_json(data)
    assert parsed.mitotic_figure_count == 3
    assert parsed.hard_negative_count == 2
