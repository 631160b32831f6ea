"""Penultimate features of a reference detector archive (worker/reference) for tiles of a test set: the
domain report's learnt features beside its colour and texture descriptors.

A tile goes through the archive's own normalisation and the network's feature layers (`features`, the layers
before the 1x1 heatmap head of worker.reference.cnn.HeatmapCNN); the channels are averaged over the tile, one
vector per tile. Nothing is downloaded: the archive is the one committed under worker/reference/archives.
Needs torch (the inference runtime); `available()` says whether it is installed.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from worker.datasets.errors import DatasetError

REFERENCE_CNN = Path(__file__).resolve().parents[1] / "reference" / "archives" / "cnn"


def available(archive: Path = REFERENCE_CNN) -> bool:
    """Whether torch is installed and the archive is present."""
    return importlib.util.find_spec("torch") is not None and (archive / "manifest.json").is_file()


def penultimate_features(
    tiles: Sequence[npt.NDArray[np.uint8]], archive: Path = REFERENCE_CNN, *, batch: int = 64
) -> npt.NDArray[np.float64]:
    """(N, channels) mean-pooled outputs of the archive's feature layers for N RGB tiles (H x W x 3, uint8)."""
    import torch

    manifest = json.loads((archive / "manifest.json").read_text(encoding="utf-8"))
    model = torch.jit.load(str(archive / manifest["model"]), map_location="cpu").eval()  # type: ignore[no-untyped-call]
    if not hasattr(model, "features"):
        raise DatasetError(f"{archive}: the model has no `features` layers to take penultimate features from")
    norm = manifest["input"]["normalisation"]
    mean = torch.tensor(norm["mean"], dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(norm["std"], dtype=torch.float32).view(1, 3, 1, 1)
    out: list[npt.NDArray[np.float64]] = []
    with torch.inference_mode():
        for start in range(0, len(tiles), batch):
            chunk = np.stack(tiles[start : start + batch]).astype(np.float32) / 255.0
            x = (torch.from_numpy(chunk).permute(0, 3, 1, 2) - mean) / std
            out.append(model.features(x).mean(dim=(2, 3)).double().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0))
