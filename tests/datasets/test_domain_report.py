"""worker.datasets.domain_report and `midog-eval dataset report`: Macenko stain vectors, sharpness, the
domain-gap number on synthetic sets with and without scanner shift, and the files the CLI writes."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi
from typer.testing import CliRunner

from app.cli import cli
from worker.datasets.domain_report import build_report
from worker.datasets.manifest import TestSet
from worker.datasets.synth import generate_test_set
from worker.datasets.synth_classification import scanner_profiles
from worker.datasets.tissue_measures import laplacian_variance, macenko_stain_vectors, stain_concentrations

pytest.importorskip("sklearn")


def _angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    cos = float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))
    return math.degrees(math.acos(min(max(cos, -1.0), 1.0)))


def test_macenko_recovers_the_stain_vectors_an_image_was_built_from() -> None:
    rng = np.random.default_rng(1)
    h = np.array([0.62, 0.72, 0.31])
    e = np.array([0.12, 0.90, 0.42])
    h, e = h / np.linalg.norm(h), e / np.linalg.norm(e)
    n = 200 * 200
    c_h = rng.gamma(2.0, 0.35, n) * (rng.random(n) < 0.6)  # some pixels eosin only, some mixed
    c_e = rng.gamma(2.0, 0.3, n) * (rng.random(n) < 0.8)
    c_h[: n // 10] = 0.0  # a little white background
    c_e[: n // 10] = 0.0
    od = c_h[:, None] * h + c_e[:, None] * e
    rgb = np.clip(np.round(256.0 * np.exp(-od) - 1.0), 0, 255).astype(np.uint8).reshape(200, 200, 3)
    got_h, got_e = macenko_stain_vectors(rgb)
    assert _angle_deg(got_h, h) < 3.0
    assert _angle_deg(got_e, e) < 3.0
    assert np.all(got_h > 0)
    assert np.all(got_e > 0)


def test_ruifrok_deconvolution_of_pure_haematoxylin_has_no_eosin() -> None:
    h = np.array([0.65, 0.70, 0.29])
    conc = stain_concentrations((0.8 * h / np.linalg.norm(h))[None, :])
    assert conc[0, 0] == pytest.approx(0.8, abs=1e-6)
    assert abs(conc[0, 1]) < 1e-6


def test_laplacian_variance_is_higher_for_a_sharp_image_than_a_blurred_one() -> None:
    rng = np.random.default_rng(0)
    sharp = rng.integers(0, 256, (128, 128, 3)).astype(np.uint8)
    blurred = ndi.gaussian_filter(sharp.astype(float), (2.0, 2.0, 0)).round().astype(np.uint8)
    assert laplacian_variance(sharp) > 10 * laplacian_variance(blurred)


def _synth(root: Path, shift: float) -> TestSet:
    return generate_test_set(root, scanners=scanner_profiles(4, shift), cases_per_scanner=3, size=(512, 384), seed=0)


@pytest.fixture(scope="module")
def shifted(tmp_path_factory: pytest.TempPathFactory) -> TestSet:
    return _synth(tmp_path_factory.mktemp("domain") / "shifted", 1.0)


def test_the_scanner_classifier_tells_shifted_scanners_apart(shifted: TestSet, tmp_path: Path) -> None:
    report = build_report(shifted, tmp_path / "r", tiles_per_image=16)
    gap = report["domain_gap"]
    assert gap["chance"] == 0.25
    assert gap["balanced_accuracy"] > 0.8
    assert gap["split"].startswith("StratifiedGroupKFold")
    assert [s["scanner"] for s in report["scanners"]] == [f"scanner-{i}" for i in range(4)]
    assert all(s["stain_h"] is not None and len(s["h_hist"]) == 24 for s in report["scanners"])


def test_the_scanner_classifier_is_near_chance_when_scanners_are_alike(tmp_path: Path) -> None:
    alike = _synth(tmp_path / "alike", 0.0)
    gap = build_report(alike, tmp_path / "r", tiles_per_image=16)["domain_gap"]
    assert gap["balanced_accuracy"] < 0.5


def test_the_cli_writes_every_file_and_a_self_contained_page(shifted: TestSet, tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = CliRunner().invoke(cli, ["dataset", "report", str(shifted.root), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "balanced accuracy" in result.stdout
    assert "chance 0.250" in result.stdout
    assert "embedding: t-SNE" in result.stderr
    for name in ("report.json", "features.csv", "per_scanner.csv", "embedding.svg", "index.html"):
        assert (out / name).is_file(), name
    page = (out / "index.html").read_text()
    assert not re.search(r"https?://", page)
    assert "<svg" in page
    assert "<title>" in page
    assert "chance 0.250" in page
    assert page.count("<table>") + page.count("<table ") >= 4
    svg = (out / "embedding.svg").read_text()
    assert "<title" in svg
    assert "#E69F00" in svg
    report = json.loads((out / "report.json").read_text())
    rows = (out / "features.csv").read_text().splitlines()
    assert len(rows) == report["tiles"] + 1
    assert rows[0].startswith("image,scanner,")
    assert rows[0].endswith("embed_x,embed_y")
    again = CliRunner().invoke(cli, ["dataset", "report", str(shifted.root), "--out", str(out)])
    assert again.exit_code == 2
    assert "not empty" in again.stderr


def test_the_cli_refuses_a_directory_without_manifest(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["dataset", "report", str(tmp_path), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert "no test-set manifest" in result.stderr


def test_a_missing_scikit_learn_is_one_clear_error(
    shifted: TestSet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "sklearn", None)
    result = CliRunner().invoke(cli, ["dataset", "report", str(shifted.root), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert "the domain report needs scikit-learn: pip install scikit-learn" in result.stderr


def test_the_reference_cnn_features_give_a_second_domain_gap(shifted: TestSet, tmp_path: Path) -> None:
    """Penultimate features of the committed reference CNN (no download): one 32-channel vector per tile, the
    same for the same tile, a domain gap and an embedding of their own; --no-cnn leaves them out."""
    pytest.importorskip("torch")  # the inference runtime; the dev environment and CI install it
    from worker.datasets.cnn_features import REFERENCE_CNN, available
    from worker.datasets.tiff import decode_rgb
    from worker.inference.tile_features import penultimate_features

    assert available()
    rgb = decode_rgb(shifted.image_path(shifted.cases[0]))
    tiles = [rgb[:128, :128], rgb[128:256, 128:256], rgb[:128, :128]]
    features = penultimate_features(tiles, REFERENCE_CNN)
    assert features.shape == (3, 32)
    assert np.array_equal(features[0], features[2])
    assert not np.allclose(features[0], features[1])

    out = tmp_path / "with-cnn"
    result = CliRunner().invoke(cli, ["dataset", "report", str(shifted.root), "--out", str(out), "--cnn"])
    assert result.exit_code == 0, result.output
    assert "on the reference CNN's features: balanced accuracy" in result.stdout
    report = json.loads((out / "report.json").read_text())
    learnt = report["domain_gap_cnn"]
    assert learnt["chance"] == 0.25
    assert 0.0 <= learnt["balanced_accuracy"] <= 1.0
    assert learnt["features"].startswith("32 channels")
    svg = (out / "embedding-cnn.svg").read_text()
    assert 'aria-labelledby="emb-cnn-title emb-cnn-desc"' in svg
    assert 'id="gap-cnn"' in (out / "index.html").read_text()

    plain = tmp_path / "without"
    result = CliRunner().invoke(cli, ["dataset", "report", str(shifted.root), "--out", str(plain), "--no-cnn"])
    assert result.exit_code == 0, result.output
    assert json.loads((plain / "report.json").read_text())["domain_gap_cnn"] is None
    assert not (plain / "embedding-cnn.svg").exists()
