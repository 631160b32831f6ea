"""Value types shared by the scoring core. Imports only numpy."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

MITOTIC_FIGURE = "mitotic figure"
NON_MITOTIC_FIGURE = "non-mitotic figure"
DEFAULT_RADIUS_MM = 7.5e-3
MISSING_PROBABILITY = 0.5  # what AP assumes for a point without a probability (official rule)

# MIDOG 2025 Track 1 ground truth: every case carries these two labels; roi type takes one of ROI_TYPES.
TUMOR_DOMAIN = "tumor domain"
ROI_TYPE = "roi type"
ROI_TYPES = ("hotspot", "challenging", "random")  # the official order, also of the output keys


class Rules(StrEnum):
    """Which official evaluation the numbers reproduce."""

    MIDOG2022 = "midog2022"
    MIDOG2021 = "midog2021"
    MIDOG2025 = "midog2025"  # Track 1: midog2022's F1 and AP, strict validation, FROC, official 2025 keys


class MissingCases(StrEnum):
    """What to do with a ground-truth case that has no prediction entry."""

    ERROR = "error"  # reject the predictions, listing the missing names
    FN = "fn"  # score the case with no predictions: its ground truth counts as false negatives
    SKIP = "skip"  # leave the case out entirely, as the official code silently does


@dataclass(frozen=True, slots=True)
class CasePredictions:
    """The detections of one image, in millimetres.

    points: (n, 3) float64 [x, y, z]; probabilities: (n,) float64 with NaN where the file gave none;
    mitotic: (n,) bool, True where name == "mitotic figure" or the point has no name.
    """

    points: FloatArray
    probabilities: FloatArray
    mitotic: BoolArray

    @classmethod
    def empty(cls) -> CasePredictions:
        return cls(np.zeros((0, 3)), np.zeros(0), np.zeros(0, dtype=bool))

    @classmethod
    def from_points(
        cls,
        points: npt.ArrayLike,
        probabilities: npt.ArrayLike | None = None,
        mitotic: npt.ArrayLike | None = None,
    ) -> CasePredictions:
        """Builds predictions from array-likes; missing probabilities are NaN, missing names mean mitotic."""
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        n = len(pts)
        probs = np.full(n, np.nan) if probabilities is None else np.asarray(probabilities, dtype=np.float64)
        mit = np.ones(n, dtype=bool) if mitotic is None else np.asarray(mitotic, dtype=bool)
        return cls(pts, probs.reshape(n), mit.reshape(n))

    def __len__(self) -> int:
        return len(self.points)


@dataclass(frozen=True, slots=True)
class GroundTruth:
    """Ground-truth mitotic figures per case, in file order (the greedy matching depends on it).

    cases: case name -> (n, 3) float64 points in mm; labels: case name -> {dimension: value}, e.g. the 2025
    format's {"tumor domain": "0", "roi type": "hotspot"} (empty for formats without labels).
    """

    cases: dict[str, FloatArray]
    labels: dict[str, dict[str, str]] = field(default_factory=dict)

    def group_map(self) -> dict[str, list[str]]:
        """Case name -> group labels derived from the per-case labels, as 'dimension=value'."""
        return {case: [f"{dim}={value}" for dim, value in self.labels.get(case, {}).items()] for case in self.cases}
