"""Classifier archives (MIDOG 2025 Track 2) in the runtime: tiny scripted models whose right answer is known
(P(atypical) from a page's grey level), run over multi-page TIFF stacks; outputs read back by the scoring
core's Track 2 reader; the fit rules, the activations and the refusals of bad model outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from torch import nn

from tests.classification_set import write_classification_set
from worker.archives import ArchiveError, ClassifierManifest
from worker.archives.manifest import ClassifierOutputSpec, PatchInputSpec
from worker.evaluation.classification import read_predictions
from worker.inference.classifier import Classifier, fit_patches, run_classifier
from worker.inference.detector import ModelOutputError
from worker.inference.images import InputError
from worker.inference.run import main
from worker.inference.stacks import list_stacks
from worker.reference.export import write_archive

from .conftest import make_manifest

# stack -> grey level of each page; darkness = 1 - level / 255
LEVELS = {"a.tiff": [51, 204, 128], "b.tiff": [10, 250, 90, 170], "c.tiff": [30]}
CPU = torch.device("cpu")


def _darkness(x: torch.Tensor) -> torch.Tensor:
    return 1.0 - x.mean(dim=(1, 2, 3))


class DarkLogit(nn.Module):
    """Binary logits 8 * (darkness - 0.5), as (N,) or (N, 1)."""

    def __init__(self, column: bool) -> None:
        super().__init__()
        self.column = column

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = 8.0 * (_darkness(x) - 0.5)
        return z[:, None] if self.column else z


class DarkProbability(nn.Module):
    """Binary probabilities: the darkness itself, times `scale` (over 1 makes them leave [0, 1])."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _darkness(x) * self.scale


class DarkTwoClass(nn.Module):
    """Two-class logits [normal, atypical] = [-z, z], z = 4 * (darkness - 0.5): softmax gives sigmoid(2z)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = 4.0 * (_darkness(x) - 0.5)
        return torch.stack([-z, z], dim=1)


class ThreeColumns(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(x.shape[0], 3)


class NaNWhenDark(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = _darkness(x)
        return torch.where(d > 0.9, torch.full_like(d, float("nan")), d)


class SizeProbe(nn.Module):
    """P(atypical) = the side of the patches it is given / 1000."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0],), float(x.shape[3]) / 1000.0)


def _manifest(
    kind: str = "binary", activation: str = "sigmoid", *, patch: int = 16, fit: str = "crop", threshold: float = 0.5
) -> ClassifierManifest:
    return ClassifierManifest(
        model="model.pt",
        input=PatchInputSpec(patch_size=patch, fit=fit, input_range="0-1"),  # type: ignore[arg-type]
        output=ClassifierOutputSpec(kind=kind, activation=activation, threshold=threshold),  # type: ignore[arg-type]
        batch_size=2,
        name="toy-classifier",
    )


def _stacks(root: Path, size: int = 16) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, levels in LEVELS.items():
        pages = np.stack([np.full((size, size, 3), level, dtype=np.uint8) for level in levels])
        tifffile.imwrite(root / name, pages, photometric="rgb")
    return root


def _expected_darkness(name: str) -> np.ndarray:
    return 1.0 - np.asarray(LEVELS[name], dtype=np.float64) / 255.0


def _run(tmp_path: Path, module: nn.Module, manifest: ClassifierManifest, *, size: int = 16) -> Path:
    archive = write_archive(tmp_path / "archive", module, manifest)
    out = tmp_path / "out"
    classifier = Classifier(archive, device=CPU)
    run_classifier(classifier, list_stacks(_stacks(tmp_path / "stacks", size)), out, loaders=2)
    return out


def _read(out: Path) -> dict[str, list[dict[str, object]]]:
    return {p.name: json.loads(p.read_text()) for p in sorted(out.glob("*.json"))}


@pytest.mark.parametrize("column", [False, True], ids=["(N,)", "(N, 1)"])
def test_binary_logits_give_one_item_per_page_in_page_order(tmp_path: Path, column: bool) -> None:
    out = _run(tmp_path, DarkLogit(column), _manifest())
    written = _read(out)
    assert sorted(written) == ["a.json", "b.json", "c.json"]  # one file per stack, batches of 2 across stacks
    for name in LEVELS:
        items = written[Path(name).with_suffix(".json").name]
        expected = 1.0 / (1.0 + np.exp(-8.0 * (_expected_darkness(name) - 0.5)))
        assert len(items) == len(LEVELS[name])
        np.testing.assert_allclose([item["confidence"] for item in items], expected, rtol=1e-5)
        assert [item["class"] for item in items] == ["atypical" if p >= 0.5 else "normal" for p in expected]
        assert all(isinstance(item["confidence"], float) for item in items)
    # The scoring core's Track 2 reader takes the directory as it is.
    read = read_predictions(out, {name: len(levels) for name, levels in LEVELS.items()})
    assert read["b.tiff"].classes.tolist() == [1, 0, 1, 0]


def test_two_class_softmax_and_a_threshold(tmp_path: Path) -> None:
    out = _run(tmp_path, DarkTwoClass(), _manifest("two-class", "softmax", threshold=0.7))
    items = _read(out)["b.json"]
    dark = _expected_darkness("b.tiff")
    expected = 1.0 / (1.0 + np.exp(-8.0 * (dark - 0.5)))
    np.testing.assert_allclose([i["confidence"] for i in items], expected, rtol=1e-5)
    assert [i["class"] for i in items] == ["atypical" if p >= 0.7 else "normal" for p in expected]


def test_probabilities_as_they_are_with_activation_none(tmp_path: Path) -> None:
    out = _run(tmp_path, DarkProbability(), _manifest("binary", "none"))
    items = _read(out)["a.json"]
    np.testing.assert_allclose([i["confidence"] for i in items], _expected_darkness("a.tiff"), rtol=1e-5)


def test_probabilities_outside_0_1_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelOutputError, match=r"P\(atypical\) .* of a.tiff is outside \[0, 1\]"):
        _run(tmp_path, DarkProbability(scale=2.0), _manifest("binary", "none"))


def test_a_wrong_output_shape_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelOutputError, match=r"expected \(2,\) or \(2, 1\) for output.kind 'binary', got \(2, 3\)"):
        _run(tmp_path, ThreeColumns(), _manifest())
    with pytest.raises(ModelOutputError, match=r"expected \(2, 2\) for output.kind 'two-class', got \(2,\)"):
        _run(tmp_path / "two", DarkLogit(False), _manifest("two-class", "softmax"))


def test_a_non_finite_score_is_refused(tmp_path: Path) -> None:
    # b.tiff page 0 has grey level 10: darkness 0.96 -> NaN
    with pytest.raises(ModelOutputError, match="non-finite score for page 0 of b.tiff"):
        _run(tmp_path, NaNWhenDark(), _manifest("binary", "none"))
    assert not (tmp_path / "out" / "b.json").exists()


def test_crop_keeps_the_centre_pixel_and_pads_with_white() -> None:
    patch = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8).to(torch.uint8)
    assert torch.equal(fit_patches(patch, 4, "crop"), patch[:, :, 2:6, 2:6].float())
    odd = torch.randint(0, 255, (1, 3, 5, 7), dtype=torch.uint8)
    cropped = fit_patches(odd, 3, "crop")
    assert torch.equal(cropped[:, :, 1, 1], odd[:, :, 2, 3].float())  # pixel size // 2 stays on pixel 3 // 2
    small = torch.zeros(1, 3, 4, 4, dtype=torch.uint8)
    padded = fit_patches(small, 8, "crop")
    assert padded.shape == (1, 3, 8, 8)
    assert torch.equal(padded[:, :, 2:6, 2:6], torch.zeros(1, 3, 4, 4))
    assert int((padded == 255).sum()) == 3 * (64 - 16)


def test_resize_resamples_to_the_patch_size() -> None:
    flat = torch.full((3, 3, 20, 12), 77, dtype=torch.uint8)
    resized = fit_patches(flat, 16, "resize")
    assert resized.shape == (3, 3, 16, 16)
    assert torch.allclose(resized, torch.full_like(resized, 77.0))
    ramp = torch.arange(32, dtype=torch.float32).repeat(1, 3, 32, 1).to(torch.uint8)
    half = fit_patches(ramp, 16, "resize")
    assert half[0, 0, 0, 0] < half[0, 0, 0, 15]  # the left-to-right ramp survives


@pytest.mark.parametrize("fit", ["crop", "resize"])
def test_the_model_sees_patch_size_patches_whatever_the_stacks_size(tmp_path: Path, fit: str) -> None:
    out = _run(tmp_path, SizeProbe(), _manifest("binary", "none", patch=24, fit=fit), size=40)
    confidences = [i["confidence"] for items in _read(out).values() for i in items]
    assert confidences == pytest.approx([0.024] * sum(map(len, LEVELS.values())))


def test_a_detector_archive_is_not_a_classifier(tmp_path: Path) -> None:
    detector = write_archive(tmp_path / "det", DarkLogit(False), make_manifest("points"))
    with pytest.raises(ArchiveError, match="manifest.json: task: the archive is a detection model, not a classifier"):
        Classifier(detector, device=CPU)


def test_stacks_whose_page_count_differs_from_the_manifest_are_refused(tmp_path: Path) -> None:
    root = write_classification_set(tmp_path / "set")
    doc = json.loads((root / "manifest.json").read_text())
    doc["cases"][0]["patches"] += 1
    (root / "manifest.json").write_text(json.dumps(doc))
    archive = write_archive(tmp_path / "archive", DarkLogit(False), _manifest(patch=32))
    with pytest.raises(InputError, match="stack_1.tiff: 4 pages, but the test-set manifest says 5 patches"):
        run_classifier(Classifier(archive, device=CPU), list_stacks(root), tmp_path / "out")


# --- the runtime command ------------------------------------------------------------------------------------


def test_the_command_runs_a_classifier_on_the_listed_stacks_only(tmp_path: Path) -> None:
    root = write_classification_set(tmp_path / "set")
    doc = json.loads((root / "manifest.json").read_text())
    doc["cases"] = doc["cases"][1:3]  # what the server mounts: only the requested cases
    (root / "listed.json").write_text(json.dumps(doc))
    archive = write_archive(tmp_path / "archive", DarkLogit(True), _manifest(patch=32))
    stats = tmp_path / "stats.json"
    out = tmp_path / "out"
    argv = ["--archive", str(archive), "--images", str(root / "listed.json"), "--output", str(out)]
    assert main([*argv, "--device", "cpu", "--stats", str(stats)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["stack_2.json", "stack_3.json"]
    figures = json.loads(stats.read_text())
    assert figures["task"] == "classification"
    assert figures["stacks"] == 2
    assert figures["patches"] == 3 + 2


def test_the_command_refuses_a_detector_on_stacks_and_a_classifier_on_images(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stacks = write_classification_set(tmp_path / "set")
    detector = write_archive(tmp_path / "det", DarkLogit(False), make_manifest("points"))
    assert main(["--archive", str(detector), "--images", str(stacks), "--output", str(tmp_path / "o1")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: the input is a classification test set (stacks of patches), but the archive is")
    assert "\n" not in err
    detection_set = tmp_path / "detection"
    detection_set.mkdir()
    (detection_set / "manifest.json").write_text(json.dumps({"format_version": 1, "name": "d", "cases": []}))
    classifier = write_archive(tmp_path / "cls", DarkLogit(False), _manifest(patch=32))
    assert main(["--archive", str(classifier), "--images", str(detection_set), "--output", str(tmp_path / "o2")]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: manifest.json: a detection test set; this archive is a classifier (task 'classification')"
    )
