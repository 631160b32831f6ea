"""The baseline classifier archive (worker.reference.classifier): trained in seconds on synthetic stacks that no
test set holds, run by the runtime on a synthetic classification set, clearly better than chance; and the
same seed gives the same model."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from worker.archives import ClassifierManifest, validate_archive
from worker.datasets.synth_classification import generate_classification_set
from worker.evaluation.classification import evaluate_classification, patch_counts, read_ground_truth, read_predictions
from worker.inference.classifier import Classifier, run_classifier
from worker.inference.stacks import list_stacks
from worker.reference.classifier import ClassifierConfig, build_classifier_archive, training_patches


@pytest.mark.slow
def test_the_baseline_classifier_is_clearly_better_than_chance(tmp_path: Path) -> None:
    started = time.monotonic()
    messages: list[str] = []
    archive = build_classifier_archive(tmp_path / "archive", seed=0, progress=messages.append)
    built = time.monotonic() - started
    manifest = validate_archive(archive)
    assert isinstance(manifest, ClassifierManifest)
    assert (manifest.input.patch_size, manifest.output.kind, manifest.output.activation) == (64, "binary", "sigmoid")
    assert messages[-1].startswith("classifier archive written to")

    root = tmp_path / "set"
    generate_classification_set(root, scanners=2, domains=3, stacks_per_domain=3, seed=5)
    out = tmp_path / "out"
    run_classifier(Classifier(archive, device=torch.device("cpu")), list_stacks(root), out)
    truth = read_ground_truth(root / "ground-truth" / "ground-truth.json")
    report = evaluate_classification(truth, read_predictions(out, patch_counts(truth)))
    overall = report.overall
    print(f"baseline classifier: built in {built:.1f} s; balanced accuracy {overall.balanced_accuracy:.3f}")
    assert (overall.balanced_accuracy or 0.0) >= 0.7
    assert (overall.roc_auc or 0.0) >= 0.75
    assert built < 120  # about 10 s on two idle cores; the bound only catches a runaway


def test_the_same_seed_gives_the_same_model_and_another_seed_another(tmp_path: Path) -> None:
    config = ClassifierConfig(stacks=2, steps=20)
    x, y = training_patches(config, seed=3)
    assert x.shape == (32, 3, 64, 64)
    assert x.dtype == torch.uint8
    assert float(y.mean()) == 0.5  # as many atypical as normal figures
    probe = x[:8].to(torch.float32)

    def outputs(seed: int, name: str) -> torch.Tensor:
        archive = build_classifier_archive(tmp_path / name, seed=seed, config=config)
        model = torch.jit.load(str(archive / "model.pt"))  # type: ignore[no-untyped-call]
        with torch.no_grad():
            result: torch.Tensor = model(probe)
        return result

    first, again, other = outputs(3, "a"), outputs(3, "b"), outputs(4, "c")
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
