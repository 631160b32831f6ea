"""The synthetic generator: layout, ground truth, determinism, and a real domain shift between scanners."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

from worker.datasets.manifest import TestSet
from worker.datasets.synth import (
    BOX_HALF_PX,
    RenderedCase,
    ScannerProfile,
    generate_test_set,
    graded_profiles,
    render_case,
    scanner_profile,
)
from worker.datasets.tiff import decode_rgb, read_image_info

SIZE = (320, 256)


def _tree_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def small_set(tmp_path_factory: pytest.TempPathFactory) -> TestSet:
    return generate_test_set(
        tmp_path_factory.mktemp("synth") / "set",
        scanners=3,
        cases_per_scanner=2,
        size=SIZE,
        seed=7,
        preview=True,
        mitosis_density=1 / 8000,
    )


def test_layout_manifest_and_ground_truth(small_set: TestSet) -> None:
    root = small_set.root
    assert (root / "manifest.json").is_file()
    assert small_set.ground_truth_path == root / "ground-truth" / "ground-truth.json"
    assert [c.name for c in small_set.cases] == [f"{i:03d}.tiff" for i in range(1, 7)]
    assert small_set.manifest.scanners == ["scanner-0", "scanner-1", "scanner-2"]
    reopened = TestSet.open(root)
    assert reopened.manifest == small_set.manifest
    gt = json.loads(small_set.ground_truth_path.read_text())
    midog = json.loads(small_set.midog_json_path.read_text())
    assert set(gt) == {c.name for c in small_set.cases}
    assert sum(len(v) for v in gt.values()) > 0
    by_id = {img["id"]: img["file_name"] for img in midog["images"]}
    for case in small_set.cases:
        image = small_set.image_path(case)
        info = read_image_info(image)
        assert (info.width, info.height) == (case.width, case.height) == SIZE
        assert info.spacing_mm == pytest.approx(case.spacing_mm, rel=1e-9)
        assert hashlib.sha256(image.read_bytes()).hexdigest() == case.sha256
        # official GT = category-1 box centres of MIDOG.json times the spacing (docs/scoring.md, Units and coordinates)
        boxes = [a["bbox"] for a in midog["annotations"] if by_id[a["image_id"]] == case.name and a["category_id"] == 1]
        expected = [[case.spacing_mm * (b[0] + b[2]) / 2, case.spacing_mm * (b[1] + b[3]) / 2, 0] for b in boxes]
        assert gt[case.name] == expected  # exactly the documented conversion
        for b in boxes:
            assert b[2] - b[0] == b[3] - b[1] == 2 * BOX_HALF_PX
            assert b[0] >= 0
            assert b[2] <= case.width
            assert b[1] >= 0
            assert b[3] <= case.height
    assert any(a["category_id"] == 2 for a in midog["annotations"])
    groups = (root / "ground-truth" / "groups.csv").read_text().splitlines()
    assert groups[0] == "image,group"
    assert groups[1] == "001.tiff,scanner-0"
    assert small_set.preview_path.stat().st_size > 0


def test_manifest_holds_nothing_from_the_ground_truth(small_set: TestSet) -> None:
    text = (small_set.root / "manifest.json").read_text()
    assert "mitotic" not in text
    assert "annotations" not in text
    assert not list((small_set.root / "images").glob("*.json"))


def test_same_seed_same_bytes_whatever_the_worker_count(small_set: TestSet, tmp_path: Path) -> None:
    again = generate_test_set(
        tmp_path / "again",
        scanners=3,
        cases_per_scanner=2,
        size=SIZE,
        seed=7,
        preview=True,
        mitosis_density=1 / 8000,
        workers=2,
    )
    assert _tree_hashes(again.root) == _tree_hashes(small_set.root)
    other = generate_test_set(
        tmp_path / "other", scanners=1, cases_per_scanner=1, size=SIZE, seed=8, mitosis_density=1 / 8000
    )
    assert other.cases[0].sha256 != small_set.cases[0].sha256


def test_a_case_does_not_depend_on_the_rest_of_the_set(small_set: TestSet, tmp_path: Path) -> None:
    one = generate_test_set(
        tmp_path / "one", scanners=1, cases_per_scanner=1, size=SIZE, seed=7, mitosis_density=1 / 8000
    )
    assert one.cases[0].sha256 == small_set.cases[0].sha256


def test_render_case_matches_the_written_image(small_set: TestSet) -> None:
    rng = np.random.default_rng([7, 1, 0])  # seed 7, scanner 1, its first case = 003.tiff
    case = render_case(1, size=SIZE, seed=rng, mitosis_density=1 / 8000)
    assert isinstance(case, RenderedCase)
    rgb, mitoses, imposters = case
    assert rgb.dtype == np.uint8
    assert rgb.shape == (SIZE[1], SIZE[0], 3)
    assert mitoses.shape[1] == 2
    assert imposters.shape[1] == 2
    written = small_set.cases[2]
    assert np.array_equal(decode_rgb(small_set.image_path(written)), rgb)
    gt = small_set.ground_truth()[written.name]
    assert np.allclose(np.asarray(gt)[:, :2], mitoses * written.spacing_mm) if gt else len(mitoses) == 0


def test_render_case_api_defaults_and_validation() -> None:
    a = render_case(0, size=(200, 160), seed=3)
    b = render_case(scanner_profile(0), size=(200, 160), seed=3)
    assert np.array_equal(a.rgb, b.rgb)
    with pytest.raises(ValueError, match="at least 64"):
        render_case(0, size=(32, 32), seed=0)


def test_scanner_profiles_are_stable_and_plausible() -> None:
    for i in range(10):
        p = scanner_profile(i)
        assert p == scanner_profile(i)
        assert p.name == f"scanner-{i}"
        assert 0.00023 <= p.spacing_mm <= 0.000262
        assert np.linalg.norm(p.stain_h) == pytest.approx(1, abs=1e-3)
    assert isinstance(scanner_profile(7), ScannerProfile)


def _lab_mean(rgb: np.ndarray) -> np.ndarray:
    """Mean colour in CIE L*a*b* (D65), the usual space for 'how different do two colours look'."""
    c = rgb.reshape(-1, 3).astype(np.float64) / 255.0
    c = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    m = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = c @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    lab = np.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], axis=1)
    return lab.mean(axis=0)


def _sharpness(rgb: np.ndarray) -> float:
    """Variance of the Laplacian of the grey image."""
    grey = rgb.astype(np.float64).mean(axis=2)
    return float(ndi.laplace(grey).var())


def test_scanners_differ_in_colour_and_sharpness() -> None:
    """Same tissue seed, four scanners: mean colours at least 10 Delta-E apart pairwise on average, the most
    shifted scanner far from the reference, and a clear sharpness ordering (blur and JPEG)."""
    size = (512, 384)
    cases = {s: render_case(s, size=size, seed=[11, 0]) for s in range(4)}
    means = {s: _lab_mean(c.rgb) for s, c in cases.items()}
    dists = [np.linalg.norm(means[a] - means[b]) for a in range(4) for b in range(a + 1, 4)]
    assert min(dists) > 5.0, dists
    assert np.linalg.norm(means[0] - means[3]) > 15.0
    sharp = {s: _sharpness(c.rgb) for s, c in cases.items()}
    assert sharp[0] > 2.0 * sharp[3], sharp
    assert sharp[0] > sharp[1] > sharp[2] > sharp[3], sharp


def test_mitoses_are_darker_and_more_irregular_than_imposters() -> None:
    """On the reference scanner, the core of a mitotic figure is darker than that of an imposter."""
    case = render_case(0, size=(1024, 768), seed=5, mitosis_density=1 / 20000)
    grey = case.rgb.astype(np.float64).mean(axis=2)

    def core(points: np.ndarray) -> float:
        vals = [np.percentile(grey[int(y) - 8 : int(y) + 9, int(x) - 8 : int(x) + 9], 10) for x, y in points]
        return float(np.median(vals))

    assert len(case.mitoses) >= 5
    assert len(case.imposters) >= 5
    assert core(case.mitoses) < core(case.imposters) - 12


DOCS_MONTAGE = Path(__file__).resolve().parents[2] / "docs" / "images" / "synthetic-scanners.png"


@pytest.mark.slow
def test_the_docs_montage_is_what_the_seed0_command_previews(tmp_path: Path) -> None:
    """docs/images/synthetic-scanners.png comes from `midog-eval dataset synth --scanners 4 --cases-per-scanner 5
    --size 2048x1536 --seed 0 --preview`. The montage shows each scanner's first case, and a case does not depend
    on the rest of the set, so one case per scanner reproduces it. If the generator changes on purpose, rerun
    that command and copy its preview.png over the docs image."""
    from PIL import Image

    assert DOCS_MONTAGE.stat().st_size < 500_000
    test_set = generate_test_set(
        tmp_path / "s", scanners=4, cases_per_scanner=1, size=(2048, 1536), seed=0, preview=True, workers=2
    )
    with Image.open(test_set.preview_path) as new, Image.open(DOCS_MONTAGE) as docs:
        assert np.array_equal(np.asarray(new.convert("RGB")), np.asarray(docs.convert("RGB")))


def test_graded_scanners_run_from_the_reference_towards_the_most_shifted() -> None:
    full = graded_profiles(4, reach=1.0)
    assert [p.name for p in full] == ["scanner-A", "scanner-B", "scanner-C", "scanner-D"]
    for ours, preset in ((full[0], scanner_profile(0)), (full[-1], scanner_profile(3))):
        assert ours.blur_sigma_px == pytest.approx(preset.blur_sigma_px)
        assert ours.h_strength == pytest.approx(preset.h_strength)
        assert ours.stain_h == pytest.approx(preset.stain_h, abs=1e-3)
        assert ours.jpeg_quality == preset.jpeg_quality
    blur = [p.blur_sigma_px for p in graded_profiles(4, reach=0.6)]
    assert blur == sorted(blur)
    assert blur[-1] == pytest.approx(0.6 + 0.6 * (2.1 - 0.6), abs=1e-3)
    with pytest.raises(ValueError, match="reach"):
        graded_profiles(4, reach=1.5)


def test_the_readme_montage_is_what_the_demo_set_previews(tmp_path: Path) -> None:
    """docs/images/demo-scanners.png is the preview of the demo's detection set (`midog-eval demo`: graded
    scanners, 1024 x 768, seed 0); one case per scanner reproduces it, as above."""
    from PIL import Image

    from app.cli.demo import GRADED_REACH

    montage = DOCS_MONTAGE.with_name("demo-scanners.png")
    assert montage.stat().st_size < 500_000
    test_set = generate_test_set(
        tmp_path / "d", scanners=graded_profiles(4, GRADED_REACH), cases_per_scanner=1, size=(1024, 768), seed=0,
        preview=True, workers=2,
    )  # fmt: skip
    with Image.open(test_set.preview_path) as new, Image.open(montage) as docs:
        assert np.array_equal(np.asarray(new.convert("RGB")), np.asarray(docs.convert("RGB")))
