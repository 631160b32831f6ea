"""A detector archive's declared features for image tiles: the learnt features of the domain report. The same
`Detector.prepare` (the archive's scaling and normalisation) and `Detector.tile_features` (the features
method, averaged over its positions) that a sandboxed run uses, here on the CPU for trusted reference
archives only."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from worker.archives import ArchiveError
from worker.inference.detector import Detector


def penultimate_features(
    tiles: Sequence[npt.NDArray[np.uint8]], archive: Path, *, batch: int = 64
) -> npt.NDArray[np.float64]:
    """(N, channels) pooled features of N RGB tiles (H x W x 3, uint8) by the archive's features method."""
    detector = Detector(archive, device=torch.device("cpu"))
    if detector.manifest.features_method is None:
        raise ArchiveError(f"{archive}: the manifest declares no features method")
    out = [
        detector.tile_features(detector.prepare(torch.from_numpy(np.stack(tiles[s : s + batch])).permute(0, 3, 1, 2)))
        .double()
        .numpy()
        for s in range(0, len(tiles), batch)
    ]
    return np.concatenate(out) if out else np.zeros((0, 0))
