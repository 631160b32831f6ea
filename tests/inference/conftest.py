"""Toy detectors and hand-made images for the runtime tests: dark discs on a light background, found by
models that look for darkness, so the right answer is known exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as nnf

from worker.archives.manifest import ArchiveManifest, InputSpec, OutputSpec
from worker.reference.export import write_archive


class DarkHeatmap(torch.nn.Module):
    """Heatmap at `stride`: local mean darkness (0..1), peaking at the centre of a dark disc."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dark = 1.0 - x.mean(dim=1, keepdim=True)
        blurred = nnf.avg_pool2d(dark, 7, stride=1, padding=3, count_include_pad=False)
        return nnf.avg_pool2d(blurred, self.stride)


class DarkPoints(torch.nn.Module):
    """Points (B, K, 3) in tile pixels: the K darkest local maxima; boxes (B, K, 5) with a shifted, weaker
    duplicate box per point when `boxes` is set (NMS must remove those)."""

    def __init__(self, boxes: bool, k: int = 8, inward: float = 0.0) -> None:
        super().__init__()
        self.boxes = boxes
        self.k = k
        self.inward = inward  # pull each point this many px towards the tile centre, as models near borders do

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dark = 1.0 - x.mean(dim=1)
        blurred = nnf.avg_pool2d(dark[:, None], 7, stride=1, padding=3, count_include_pad=False)[:, 0]
        peaks = nnf.max_pool2d(blurred[:, None], 9, stride=1, padding=4)[:, 0]
        score = torch.where((blurred == peaks) & (blurred > 0.5), blurred, torch.zeros_like(blurred))
        vals, idx = torch.topk(score.flatten(1), self.k, dim=1)
        w = x.shape[3]
        xs = (idx % w).to(torch.float32)
        ys = torch.div(idx, w, rounding_mode="floor").to(torch.float32)
        vals = torch.where(vals > 0, vals, torch.full_like(vals, -1.0))
        xs = xs + self.inward * torch.sign((w - 1) / 2 - xs)
        ys = ys + self.inward * torch.sign((x.shape[2] - 1) / 2 - ys)
        if not self.boxes:
            return torch.stack([xs, ys, vals], dim=2)
        main = torch.stack([xs - 6, ys - 6, xs + 6, ys + 6, vals], dim=2)
        dup = torch.stack([xs - 5, ys - 6, xs + 7, ys + 6, vals * 0.9], dim=2)
        return torch.cat([main, dup], dim=1)


def disc_image(width: int, height: int, centres: list[tuple[float, float]], radius: float = 5.0) -> np.ndarray:
    """Light noisy background (about 220) with black discs at (x, y) centres."""
    rng = np.random.default_rng(0)
    img = rng.integers(205, 235, size=(height, width, 3)).astype(np.uint8)
    yy, xx = np.mgrid[0:height, 0:width]
    for cx, cy in centres:
        img[(xx - cx) ** 2 + (yy - cy) ** 2 <= radius**2] = 10
    return img


def make_manifest(
    kind: str, *, tile: int = 64, overlap: int = 16, stride: int = 4, spacing: float | None = None
) -> ArchiveManifest:
    out = OutputSpec(
        kind=kind, threshold=0.6, nms_radius_px=8.0, stride=stride if kind == "heatmap" else 1, min_score=0.3
    )  # type: ignore[arg-type]
    return ArchiveManifest(
        model="model.pt",
        input=InputSpec(tile_size=tile, overlap=overlap, spacing_mm=spacing, input_range="0-1"),
        output=out,
        bf16=True,
        batch_size=5,
        name=f"toy-{kind}",
    )


@pytest.fixture
def toy_archive(tmp_path: Path):
    def build(kind: str, inward: float = 0.0, **kwargs: object) -> Path:
        manifest = make_manifest(kind, **kwargs)  # type: ignore[arg-type]
        module = (
            DarkHeatmap(manifest.output.stride)
            if kind == "heatmap"
            else DarkPoints(boxes=kind == "boxes", inward=inward)
        )
        return write_archive(tmp_path / f"archive-{kind}", module, manifest)

    return build
