"""The runtime command end to end: TIFFs or a test-set manifest in, Multiple points JSON out, read back and
scored by the scoring core."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from worker.datasets.cache import DecodedImageCache
from worker.evaluation.io import read_predictions
from worker.evaluation.metrics import evaluate
from worker.evaluation.types import GroundTruth
from worker.inference.detector import Detector
from worker.inference.images import ImageReader, ImageSpec, list_images
from worker.inference.pipeline import run_archive
from worker.inference.run import main
from worker.reference.export import zip_archive

from .conftest import disc_image

SPACING = 0.00025
CASES = {
    "001.tiff": [(30.0, 30.0), (100.0, 57.0), (150.0, 120.0)],
    "002.tiff": [(56.0, 56.0)],
    "003.tiff": [],
}


def _write_set(root: Path, *, unit: str = "CENTIMETER") -> Path:
    images = root / "images"
    images.mkdir(parents=True)
    entries = []
    for name, centres in CASES.items():
        path = images / name
        per_unit = (10.0 if unit == "CENTIMETER" else 25.4) / SPACING
        tifffile.imwrite(
            path, disc_image(200, 160, centres), photometric="rgb", resolution=(per_unit, per_unit), resolutionunit=unit
        )
        entries.append(
            {
                "name": name,
                "image": f"images/{name}",
                "width": 200,
                "height": 160,
                "spacing_mm": SPACING,
                "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                "groups": {"scanner": "A"},
            }
        )
    manifest = {"format_version": 1, "name": "toy", "cases": entries, "group_dimensions": ["scanner"]}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def _ground_truth() -> GroundTruth:
    return GroundTruth(
        cases={n: np.array([[x * SPACING, y * SPACING, 0.0] for x, y in c]).reshape(-1, 3) for n, c in CASES.items()},
        labels={},
    )


def _score(out: Path) -> float:
    preds = read_predictions(out)
    preds = {f"{stem}.tiff": p for stem, p in preds.items()}
    return evaluate(_ground_truth(), preds).overall.f1


@pytest.mark.parametrize("unit", ["CENTIMETER", "INCH"])
def test_spacing_comes_from_the_tiff_resolution_tags(tmp_path: Path, unit: str) -> None:
    root = _write_set(tmp_path / "set", unit=unit)
    specs = list_images(root / "images")
    assert [s.name for s in specs] == list(CASES)
    assert all(s.spacing_mm == pytest.approx(SPACING) for s in specs)


@pytest.mark.parametrize("kind", ["heatmap", "boxes"])
def test_command_writes_one_scored_file_per_image(toy_archive, tmp_path: Path, kind: str, capsys) -> None:
    root = _write_set(tmp_path / "set")
    out = tmp_path / "out"
    rc = main(["--archive", str(toy_archive(kind)), "--images", str(root), "--output", str(out), "--device", "cpu"])
    assert rc == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["images"] == 3
    assert figures["detections"] == 4
    assert sorted(p.name for p in out.iterdir()) == ["001.json", "002.json", "003.json"]
    doc = json.loads((out / "001.json").read_text())
    assert doc["type"] == "Multiple points"
    assert {p["name"] for p in doc["points"]} <= {"mitotic figure", "non-mitotic figure"}
    assert _score(out) == pytest.approx(1.0, abs=1e-5)


def test_names_follow_the_manifest_threshold(toy_archive, tmp_path: Path) -> None:
    root = _write_set(tmp_path / "set")
    out = tmp_path / "out"
    assert main(["--archive", str(toy_archive("points")), "--images", str(root), "--output", str(out)]) == 0
    for path in out.iterdir():
        for p in json.loads(path.read_text())["points"]:
            assert (p["name"] == "mitotic figure") == (p["probability"] >= 0.6)
            assert 0 <= p["point"][0] <= 199 * SPACING
            assert p["point"][2] == 0.0


def test_zip_archive_as_a_subprocess_like_the_sandbox_runs_it(toy_archive, tmp_path: Path) -> None:
    root = _write_set(tmp_path / "set")
    zipped = zip_archive(toy_archive("points"), tmp_path / "model.zip")
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "worker.inference.run",
            "--archive",
            str(zipped),
            "--images",
            str(root / "images"),
            "--output",
            str(out),
            "--device",
            "cuda",
            "--stats",
            str(tmp_path / "stats.json"),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    if not torch.cuda.is_available():
        assert "no CUDA device available, running on the CPU" in proc.stderr
    assert json.loads((tmp_path / "stats.json").read_text())["tiles"] == 3 * 12
    assert _score(out) == pytest.approx(1.0, abs=1e-5)


def test_invalid_archive_is_one_line_and_exit_status_2(tmp_path: Path, capsys) -> None:
    root = _write_set(tmp_path / "set")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "manifest.json").write_text('{"format_version": 2}')
    assert main(["--archive", str(bad), "--images", str(root), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: manifest.json: format_version: must be 1, got 2"


def test_decoded_cache_is_used_when_it_holds_the_image(toy_archive, tmp_path: Path) -> None:
    root = _write_set(tmp_path / "set")
    cache = tmp_path / "cache"
    cache.mkdir()
    specs = list_images(root)
    # The cached copy of 002 differs from its TIFF (an extra disc), which shows where pixels came from.
    assert specs[1].sha256 is not None
    entry = DecodedImageCache(cache).path_for(specs[1].sha256)
    entry.parent.mkdir()
    np.save(entry, disc_image(200, 160, [(56.0, 56.0), (150.0, 100.0)]))
    reader = ImageReader(cache)
    assert reader.read(specs[1]).shape == (160, 200, 3)
    assert isinstance(reader.read(specs[1]), np.memmap)
    detector = Detector(toy_archive("heatmap"), device=torch.device("cpu"))
    stats = run_archive(detector, specs, tmp_path / "out", cache_dir=cache, loaders=2)
    assert stats.detections == 5
    assert len(json.loads((tmp_path / "out" / "002.json").read_text())["points"]) == 2


def test_two_cases_with_the_same_stem_are_refused(toy_archive, tmp_path: Path) -> None:
    detector = Detector(toy_archive("heatmap"), device=torch.device("cpu"))
    specs = [ImageSpec("a.tif", tmp_path / "a.tif", SPACING), ImageSpec("a.tiff", tmp_path / "a.tiff", SPACING)]
    with pytest.raises(ValueError, match="same output file"):
        run_archive(detector, specs, tmp_path / "out")


def test_read_into_decodes_rgb_tiffs_straight_into_the_given_buffer(tmp_path: Path) -> None:
    rgb = disc_image(70, 50, [(20.0, 20.0)])
    grey = rgb[:, :, 0].copy()
    tifffile.imwrite(tmp_path / "rgb.tiff", rgb, photometric="rgb")
    tifffile.imwrite(tmp_path / "grey.tiff", grey, photometric="minisblack")
    reader = ImageReader()
    buffers: list[np.ndarray] = []

    def allocate(shape: tuple[int, int, int]) -> np.ndarray:
        buffers.append(np.zeros(shape, dtype=np.uint8))
        return buffers[-1]

    got = reader.read_into(ImageSpec("rgb.tiff", tmp_path / "rgb.tiff", SPACING), allocate)
    assert got is buffers[-1]
    assert np.array_equal(got, rgb)
    got = reader.read_into(ImageSpec("grey.tiff", tmp_path / "grey.tiff", SPACING), allocate)
    assert got.shape == (50, 70, 3)
    assert np.array_equal(got, np.repeat(grey[:, :, None], 3, axis=2))
