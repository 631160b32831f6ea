"""The runtime on a CUDA device (pinned buffers, events, bf16, channels-last) agrees with the CPU run.

Marked `gpu`: on machines without CUDA these tests are skipped because there is nothing to run them on.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from worker.inference.detector import Detector
from worker.inference.images import ImageSpec
from worker.inference.pipeline import run_archive

from .conftest import disc_image

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine"),
]

CENTRES = [(20.0, 20.0), (56.0, 30.0), (104.0, 104.0), (50.0, 100.0), (150.0, 56.5), (180.0, 130.0)]


@pytest.mark.parametrize("kind", ["heatmap", "points", "boxes"])
def test_cuda_detections_match_the_cpu(toy_archive, kind: str) -> None:
    archive = toy_archive(kind)
    image = torch.from_numpy(disc_image(200, 150, CENTRES)).permute(2, 0, 1)
    cpu = Detector(archive, device=torch.device("cpu")).detect(image, 0.00025)
    gpu_detector = Detector(archive, device=torch.device("cuda"))
    assert gpu_detector.bf16
    gpu = gpu_detector.detect(image.cuda(), 0.00025)
    assert len(gpu.scores) == len(cpu.scores) == len(CENTRES)
    # A disc's darkness has a plateau of equal maxima; CPU and GPU may break that tie differently (1 px).
    for x, y in [*cpu.xy_px, *CENTRES]:
        assert np.hypot(gpu.xy_px[:, 0] - x, gpu.xy_px[:, 1] - y).min() <= 3.0


def test_pipeline_on_cuda_writes_what_the_cpu_writes(toy_archive, tmp_path: Path) -> None:
    import tifffile

    specs = []
    for i in range(6):
        path = tmp_path / f"{i:03d}.tiff"
        shift = 7.0 * i
        tifffile.imwrite(path, disc_image(200 + 8 * i, 150, [(x + shift, y) for x, y in CENTRES]), photometric="rgb")
        specs.append(ImageSpec(path.name, path, 0.00025))
    archive = toy_archive("heatmap")
    run_archive(Detector(archive, device=torch.device("cpu")), specs, tmp_path / "cpu")
    stats = run_archive(Detector(archive, device=torch.device("cuda")), specs, tmp_path / "cuda", loaders=3)
    assert stats.device.startswith("cuda")
    for spec in specs:
        name = Path(spec.name).stem + ".json"
        a = json.loads((tmp_path / "cpu" / name).read_text())["points"]
        b = json.loads((tmp_path / "cuda" / name).read_text())["points"]
        assert len(a) == len(b) == len(CENTRES)
        pa = np.array(sorted(p["point"] for p in a))
        pb = np.array(sorted(p["point"] for p in b))
        assert np.abs(pa - pb).max() <= 1.0 * 0.00025


@pytest.mark.slow
def test_reference_cnn_in_bf16_on_cuda_scores_like_float32_on_the_cpu(tmp_path: Path) -> None:
    from worker.datasets.synth import generate_test_set
    from worker.reference.scoring import score_archive

    archive = Path(__file__).resolve().parents[2] / "worker" / "reference" / "archives" / "cnn"
    held_out = generate_test_set(tmp_path / "set", scanners=4, cases_per_scanner=3, size=(1024, 768), seed=2).root
    cpu = score_archive(archive, held_out, tmp_path / "cpu", device="cpu")
    gpu = score_archive(archive, held_out, tmp_path / "cuda", device="cuda")
    print({label: (round(s.f1, 3), round(gpu.groups[label].f1, 3)) for label, s in sorted(cpu.groups.items())})
    for label, scores in cpu.groups.items():
        assert abs(gpu.groups[label].f1 - scores.f1) <= 0.03, (label, scores.f1, gpu.groups[label].f1)
