"""Archives that declare features: the manifest field, the detector's per-case vector (detections unchanged),
the files the runtime writes, and the sandbox command that asks for them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from worker.archives import ArchiveError, parse_manifest
from worker.datasets.synth import generate_test_set
from worker.inference.detector import Detector
from worker.inference.images import list_images
from worker.inference.pipeline import run_archive

ARCHIVES = Path(__file__).resolve().parents[2] / "worker" / "reference" / "archives"


def _manifest(**extra: object) -> dict[str, object]:
    doc = json.loads((ARCHIVES / "cnn" / "manifest.json").read_text())
    doc.pop("features", None)
    doc.update(extra)
    return doc


def test_the_manifest_names_a_public_method() -> None:
    assert parse_manifest(_manifest(features={"method": "features"})).features_method == "features"  # type: ignore[union-attr]
    assert parse_manifest(_manifest()).features_method is None  # type: ignore[union-attr]
    round_trip = parse_manifest(_manifest(features={"method": "embed"}))
    assert round_trip.to_dict()["features"] == {"method": "embed"}
    for bad in ("_private", "1st", "a.b", 7, "x" * 65):
        with pytest.raises(ArchiveError, match="features.method"):
            parse_manifest(_manifest(features={"method": bad}))
    with pytest.raises(ArchiveError, match="features.layer: is not a known field"):
        parse_manifest(_manifest(features={"method": "features", "layer": 3}))


def _without_features(tmp_path: Path) -> Path:
    plain = tmp_path / "plain"
    shutil.copytree(ARCHIVES / "cnn", plain)
    doc = json.loads((plain / "manifest.json").read_text())
    doc.pop("features")
    (plain / "manifest.json").write_text(json.dumps(doc))
    return plain


def test_features_leave_the_detections_as_they_were(tmp_path: Path) -> None:
    image = torch.from_numpy(np.random.default_rng(0).integers(0, 255, (3, 700, 600), dtype=np.uint8))
    with_features = Detector(ARCHIVES / "cnn", device=torch.device("cpu")).detect(image, 0.00025)
    plain = Detector(_without_features(tmp_path), device=torch.device("cpu")).detect(image, 0.00025)
    assert plain.features is None
    assert with_features.features is not None
    assert with_features.features.shape == (32,)
    assert np.isfinite(with_features.features).all()
    assert np.array_equal(with_features.xy_px, plain.xy_px)
    assert np.array_equal(with_features.scores, plain.scores)


def test_a_method_the_model_lacks_is_refused(tmp_path: Path) -> None:
    archive = _without_features(tmp_path)
    doc = json.loads((archive / "manifest.json").read_text())
    doc["features"] = {"method": "embed"}
    (archive / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(ArchiveError, match="the model has no 'embed'"):
        Detector(archive, device=torch.device("cpu"))


def test_the_runtime_writes_one_vector_per_case(tmp_path: Path) -> None:
    test_set = generate_test_set(tmp_path / "set", scanners=2, cases_per_scanner=1, size=(512, 384), seed=2).root
    detector = Detector(ARCHIVES / "cnn", device=torch.device("cpu"))
    run_archive(detector, list_images(test_set), tmp_path / "out", features_output=tmp_path / "features")
    written = sorted(p.name for p in (tmp_path / "features").iterdir())
    assert written == sorted(p.name for p in (tmp_path / "out").iterdir())
    for path in (tmp_path / "features").iterdir():
        assert len(json.loads(path.read_text())["features"]) == 32
    plain = Detector(_without_features(tmp_path), device=torch.device("cpu"))
    run_archive(plain, list_images(test_set), tmp_path / "out2", features_output=tmp_path / "none")
    assert not (tmp_path / "none").exists()


def test_the_sandbox_command_asks_for_features_only_when_declared() -> None:
    from worker.model_runner import FEATURES_DIR, ModelArchiveRunner

    runner = ModelArchiveRunner.__new__(ModelArchiveRunner)  # command() reads only the CPU setting
    runner.settings = type("S", (), {"cpus": 2.0})()  # type: ignore[assignment]
    with_features = runner.command("python3", gpu=False, cache=False, features=True)
    assert "--features" in with_features
    assert with_features[with_features.index("--features") + 1] == f"/output/{FEATURES_DIR}"
    assert "--features" not in runner.command("python3", gpu=False, cache=False)
