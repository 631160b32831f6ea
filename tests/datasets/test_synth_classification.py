"""`dataset synth --task classification`: layout, official ground truth, determinism, a learnable difference
between atypical and normal figures, the scanner shift, and `dataset info` on the result."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from app.cli import cli
from worker.datasets.manifest import Manifest, TestSet
from worker.datasets.stacks import ATYPICAL, NORMAL, read_classification_truth, read_stack, stack_page_count
from worker.datasets.synth import generate_test_set, scanner_profile
from worker.datasets.synth_classification import (
    ATYPICAL_FIGURES,
    NORMAL_FIGURES,
    domain_style,
    generate_classification_set,
    label_of,
    render_stack,
    scanner_profiles,
    shifted_profile,
    stack_plan,
)
from worker.datasets.tiff import read_image_info
from worker.evaluation.classification import read_ground_truth

PATCH = 64
OPTIONS = {
    "scanners": 2,
    "domains": 2,
    "stacks_per_domain": 2,
    "max_patches": 6,
    "patch_size": PATCH,
    "atypical_fraction": 0.3,
    "seed": 5,
}


def _tree_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def small_set(tmp_path_factory: pytest.TempPathFactory) -> TestSet:
    return generate_classification_set(tmp_path_factory.mktemp("cls") / "set", preview=True, **OPTIONS)


def test_layout_manifest_and_official_ground_truth(small_set: TestSet) -> None:
    root = small_set.root
    obj = json.loads((root / "manifest.json").read_text())
    assert obj["task"] == "classification"
    manifest = Manifest.from_json(obj)
    assert manifest == small_set.manifest == TestSet.open(root).manifest
    assert [c.name for c in manifest.cases] == [f"stack_{i}.tiff" for i in range(1, 9)]
    assert manifest.scanners == ["scanner-0", "scanner-1"]
    truth = read_ground_truth(small_set.ground_truth_path)  # the scoring core's strict reader
    light = read_classification_truth(small_set.ground_truth_path)
    assert list(truth) == [c.name for c in manifest.cases] == [t.image for t in light]
    for case in manifest.cases:
        path = small_set.image_path(case)
        assert case.image == f"images/{case.name}"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == case.sha256
        pages = read_stack(path)
        assert case.patches == stack_page_count(path) == len(pages) == len(truth[case.name].labels)
        assert 1 <= case.patches <= 6
        assert pages.shape[1:] == (PATCH, PATCH, 3)
        assert (case.width, case.height) == (PATCH, PATCH)
        info = read_image_info(path)
        assert info.spacing_mm == pytest.approx(case.spacing_mm, rel=1e-9)
        domains = set(truth[case.name].domains.tolist())
        assert len(domains) == 1  # one tumour domain per stack
        assert case.groups == {"scanner": case.scanner, "tumor domain": str(domains.pop())}
    assert (root / "ground-truth" / "groups.csv").read_text().splitlines()[:2] == [
        "image,group",
        "stack_1.tiff,scanner-0",
    ]
    assert (root / "ground-truth" / "groups-tumor_domain.csv").read_text().splitlines()[1] == "stack_1.tiff,0"
    assert (root / "preview.png").stat().st_size > 0


def test_the_manifest_holds_no_label_and_patches_csv_matches(small_set: TestSet) -> None:
    text = (small_set.root / "manifest.json").read_text()
    assert 'atypical"' not in text.replace("atypical_fraction", "").replace("atypical_weight", "")
    assert "labels" not in text
    rows = (small_set.root / "ground-truth" / "patches.csv").read_text().splitlines()
    assert rows[0] == "stack,page,label,tumor_domain,scanner,figure"
    truth = {t.image: t for t in read_classification_truth(small_set.ground_truth_path)}
    for row in rows[1:]:
        stack, page, label, domain, _, figure = row.split(",")
        assert truth[stack].labels[int(page)] == label == label_of(figure)
        assert truth[stack].domains[int(page)] == int(domain)
    assert len(rows) - 1 == sum(c.patches or 0 for c in small_set.cases)


def test_same_seed_same_bytes_whatever_the_worker_count(small_set: TestSet, tmp_path: Path) -> None:
    again = generate_classification_set(tmp_path / "again", preview=True, workers=2, **OPTIONS)
    assert _tree_hashes(again.root) == _tree_hashes(small_set.root)
    other = generate_classification_set(tmp_path / "other", **{**OPTIONS, "seed": 6})
    assert other.cases[0].sha256 != small_set.cases[0].sha256


def test_a_stack_does_not_depend_on_the_rest_of_the_set(small_set: TestSet, tmp_path: Path) -> None:
    one = generate_classification_set(
        tmp_path / "one",
        **{**OPTIONS, "scanners": 1, "domains": 1, "stacks_per_domain": 1},
    )
    assert one.cases[0].sha256 == small_set.cases[0].sha256


def test_both_classes_are_always_there(tmp_path: Path) -> None:
    none = generate_classification_set(tmp_path / "none", **{**OPTIONS, "atypical_fraction": 0.0})
    labels = [label for t in read_classification_truth(none.ground_truth_path) for label in t.labels]
    assert labels.count(ATYPICAL) == 1
    assert labels[0] == ATYPICAL
    # domain-0 has weight 1: every figure atypical, but the first
    everything = generate_classification_set(tmp_path / "all", **{**OPTIONS, "domains": 1, "atypical_fraction": 1.0})
    labels = [label for t in read_classification_truth(everything.ground_truth_path) for label in t.labels]
    assert labels.count(NORMAL) == 1


def test_stack_plans_follow_the_atypical_fraction_and_the_domain_weights() -> None:
    for fraction in (0.1, 0.3):
        for d in range(3):
            style = domain_style(d)
            kinds = [k for i in range(150) for k in stack_plan(1, 0, d, i, style, 16, fraction)]
            share = sum(label_of(k) == ATYPICAL for k in kinds) / len(kinds)
            assert share == pytest.approx(fraction * style.atypical_weight, abs=0.03)
    sizes = [len(stack_plan(1, 0, 0, i, domain_style(0), 16, 0.2)) for i in range(200)]
    assert max(sizes) == 16
    assert min(sizes) >= 1
    assert 0.5 < sizes.count(16) / len(sizes) < 0.7


def _chromatin_features(patches: np.ndarray, um: float) -> np.ndarray:
    """Per patch: the mean distance of dark chromatin from the centre and its area (within 9 um)."""
    size = patches.shape[1]
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(yy - size // 2, xx - size // 2)
    out = []
    for patch in patches:
        inner = (patch.astype(np.float64).mean(axis=2) < 70) & (r < 9 * um)
        out.append((r[inner].mean() if inner.any() else 0.0, float(inner.sum())))
    return np.asarray(out)


def _auc(score: np.ndarray, positive: np.ndarray) -> float:
    pos, neg = score[positive], score[~positive]
    return float((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean())


def test_atypical_figures_are_more_spread_out_than_normal_ones_but_not_trivially() -> None:
    """On the reference scanner, one hand-made feature separates the classes well (AUC > 0.7) but not
    perfectly (< 0.97): a difference a model can learn, not a give-away."""
    profile = scanner_profile(0)
    um = 1.0 / (profile.spacing_mm * 1000.0)
    feats, positive = [], []
    for k in range(9):
        kinds = stack_plan(3, 0, k % 3, k, domain_style(k % 3), 16, 0.5)
        feats.append(
            _chromatin_features(render_stack(profile, domain_style(k % 3), kinds, patch_size=96, seed=[3, k]), um)
        )
        positive += [label_of(kind) == ATYPICAL for kind in kinds]
    f, y = np.concatenate(feats), np.asarray(positive)
    assert 20 < y.sum() < len(y) - 20
    for column in (0, 1):
        assert 0.7 < _auc(f[:, column], y) < 0.97


def test_every_figure_kind_renders_centred_dark_chromatin() -> None:
    profile = scanner_profile(0)
    patches = render_stack(profile, domain_style(0), [*NORMAL_FIGURES, *ATYPICAL_FIGURES], patch_size=96, seed=1)
    assert patches.shape == (9, 96, 96, 3)
    for patch in patches:
        grey = patch.astype(np.float64).mean(axis=2)
        centre = grey[48 - 12 : 48 + 13, 48 - 12 : 48 + 13]
        assert centre.min() < 60  # chromatin near the centre
        assert np.median(grey) > 120  # light tissue around it


def test_scanner_shift_moves_the_scanners_away_from_the_reference() -> None:
    reference = scanner_profile(0)
    flat = scanner_profiles(4, 0.0)
    for p in flat:
        assert (p.stain_h, p.blur_sigma_px, p.gamma, p.jpeg_quality, p.spacing_mm) == (
            reference.stain_h, reference.blur_sigma_px, reference.gamma, reference.jpeg_quality, reference.spacing_mm,
        )  # fmt: skip
    assert [p.name for p in flat] == ["scanner-0", "scanner-1", "scanner-2", "scanner-3"]
    assert scanner_profiles(4, 1.0) == [scanner_profile(i) for i in range(4)]
    assert shifted_profile(scanner_profile(3), reference, 2.0).blur_sigma_px > scanner_profile(3).blur_sigma_px
    kinds = ["metaphase"] * 9
    base = render_stack(reference, domain_style(0), kinds, patch_size=64, seed=9).reshape(-1, 3).mean(axis=0)
    distances = []
    for shift in (0.0, 0.5, 1.0, 2.0):
        profile = shifted_profile(scanner_profile(3), reference, shift)
        mean = render_stack(profile, domain_style(0), kinds, patch_size=64, seed=9).reshape(-1, 3).mean(axis=0)
        distances.append(float(np.abs(mean - base).sum()))
    assert distances[0] < 20  # shift 0: scanner-3 looks like the reference (its own noise only)
    assert distances == sorted(distances)
    assert distances[2] > distances[0] + 20


def test_cli_synth_classification_and_info(tmp_path: Path) -> None:
    out = tmp_path / "set"
    args = ["dataset", "synth", "--task", "classification", "--out", str(out), "--scanners", "2", "--domains", "2"]
    result = CliRunner().invoke(cli, [*args, "--stacks-per-domain", "2", "--patches", "5", "--patch-size", "64",
                                      "--seed", "2", "--workers", "1"])  # fmt: skip
    assert result.exit_code == 0, result.output
    test_set = TestSet.open(out)
    truth = read_ground_truth(test_set.ground_truth_path)
    n_patches = sum(len(s.labels) for s in truth.values())
    n_atypical = sum(int(s.labels.sum()) for s in truth.values())
    assert f"wrote 8 stacks ({n_patches} patches)" in result.output
    info = CliRunner().invoke(cli, ["dataset", "info", str(out)])
    assert info.exit_code == 0, info.output
    assert f"(classification): 8 stacks, {n_patches} patches, 2 scanners, 2 tumour domains, {n_atypical} atypical" in (
        info.output
    )
    assert "tumour domain" in info.output
    obj = json.loads(CliRunner().invoke(cli, ["dataset", "info", str(out), "--json"]).output)
    assert obj["task"] == "classification"
    assert (obj["stacks"], obj["patches"], obj["atypical"]) == (8, n_patches, n_atypical)
    assert [r["scanner"] for r in obj["scanners"]] == ["scanner-0", "scanner-1"]
    assert [r["tumor_domain"] for r in obj["tumor_domains"]] == ["0", "1"]
    assert sum(r["patches"] for r in obj["tumor_domains"]) == n_patches
    assert sum(r["atypical"] for r in obj["scanners"]) == n_atypical
    assert obj["scanners"][0]["stacks"] == 4


def test_cli_refuses_options_of_the_other_task(tmp_path: Path) -> None:
    detection_only = CliRunner().invoke(
        cli, ["dataset", "synth", "--task", "classification", "--out", str(tmp_path / "a"), "--size", "400x300"]
    )
    assert detection_only.exit_code == 2
    assert "--size: not an option of --task classification" in detection_only.stderr
    classification_only = CliRunner().invoke(cli, ["dataset", "synth", "--out", str(tmp_path / "b"), "--domains", "2"])
    assert classification_only.exit_code == 2
    assert "--domains: not an option of --task detection" in classification_only.stderr
    unknown = CliRunner().invoke(cli, ["dataset", "synth", "--out", str(tmp_path / "c"), "--task", "segmentation"])
    assert unknown.exit_code == 2
    assert "--task: expected one of detection, classification" in unknown.stderr


def test_detection_stays_the_default_and_byte_identical(tmp_path: Path) -> None:
    """`--task detection`, no --task, `--shift 1` and the library call write the same bytes."""
    common = ["--scanners", "2", "--cases-per-scanner", "1", "--size", "200x160", "--seed", "4", "--workers", "1"]
    trees = []
    for i, extra in enumerate(([], ["--task", "detection"], ["--shift", "1"])):
        out = tmp_path / f"d{i}"
        result = CliRunner().invoke(cli, ["dataset", "synth", "--out", str(out), *common, *extra, "-q"])
        assert result.exit_code == 0, result.output
        trees.append(_tree_hashes(out))
    direct = generate_test_set(tmp_path / "lib", scanners=2, cases_per_scanner=1, size=(200, 160), seed=4)
    assert trees[0] == trees[1] == trees[2] == _tree_hashes(direct.root)
    assert "task" not in json.loads((tmp_path / "d0" / "manifest.json").read_text())
    shifted = tmp_path / "shifted"
    result = CliRunner().invoke(cli, ["dataset", "synth", "--out", str(shifted), *common, "--shift", "0", "-q"])
    assert result.exit_code == 0, result.output
    cases = TestSet.open(shifted).cases
    assert cases[1].spacing_mm == cases[0].spacing_mm  # scanner-1 rendered as the reference scanner
