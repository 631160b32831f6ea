"""Stacking of per-case point arrays into one array, so that one KD-tree serves every case. numpy only.

Each case's x coordinate is shifted by its own offset (case index times the largest extent plus a margin), so
points of different cases can never be candidates of each other. The offsets serve only the candidate search:
exact distances and overlaps are always computed from the original coordinates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from worker.evaluation.types import FloatArray

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Stacked:
    """Points of many cases in one array: `case_ids[i]` is the case of row i; rows keep case order."""

    points: FloatArray
    case_ids: IntArray
    starts: IntArray  # row where each case begins; starts[-1] == len(points)


def stack(arrays: Sequence[FloatArray], width: int) -> Stacked:
    """Concatenates (n_i, width) arrays in order."""
    lengths = np.fromiter((len(a) for a in arrays), dtype=np.int64, count=len(arrays))
    starts = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
    points = np.concatenate([a.reshape(-1, width) for a in arrays]) if arrays else np.zeros((0, width))
    case_ids = np.repeat(np.arange(len(arrays), dtype=np.int64), lengths)
    return Stacked(points.astype(np.float64, copy=False), case_ids, starts)
