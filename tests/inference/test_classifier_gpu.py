"""Classifier archives on a CUDA device (pinned pages, non-blocking copies, events, bf16, channels-last) write
what the CPU run writes. Marked `gpu`: skipped on machines without CUDA."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from worker.inference.classifier import Classifier, run_classifier
from worker.inference.stacks import list_stacks
from worker.reference.export import write_archive

from .test_classifier import DarkTwoClass, _manifest

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine"),
]


@pytest.mark.parametrize("fit", ["crop", "resize"])
def test_cuda_classifications_match_the_cpu(tmp_path: Path, fit: str) -> None:
    rng = np.random.default_rng(0)
    stacks = tmp_path / "stacks"
    stacks.mkdir()
    for i in range(20):  # stacks of 1 to 16 pages, batches of 8 across them
        count = int(rng.integers(1, 17))
        levels = rng.integers(20, 236, size=(count, 1, 1, 1))
        pages = np.clip(levels + rng.integers(-20, 21, size=(count, 40, 40, 3)), 0, 255).astype(np.uint8)
        tifffile.imwrite(stacks / f"stack_{i}.tiff", pages, photometric="rgb")
    manifest = replace(_manifest("two-class", "softmax", patch=32, fit=fit), bf16=True, batch_size=8)
    archive = write_archive(tmp_path / "archive", DarkTwoClass(), manifest)
    specs = list_stacks(stacks)
    run_classifier(Classifier(archive, device=torch.device("cpu")), specs, tmp_path / "cpu")
    gpu = Classifier(archive, device=torch.device("cuda"))
    assert gpu.bf16
    stats = run_classifier(gpu, specs, tmp_path / "cuda", loaders=3)
    assert stats.device.startswith("cuda")
    for spec in specs:
        name = Path(spec.name).with_suffix(".json").name
        a = json.loads((tmp_path / "cpu" / name).read_text())
        b = json.loads((tmp_path / "cuda" / name).read_text())
        assert len(a) == len(b)
        pa = np.array([item["confidence"] for item in a])
        pb = np.array([item["confidence"] for item in b])
        assert np.abs(pa - pb).max() <= 0.02
        clear = np.abs(pa - 0.5) > 0.05
        assert [x["class"] for x, c in zip(a, clear, strict=True) if c] == [
            x["class"] for x, c in zip(b, clear, strict=True) if c
        ]
