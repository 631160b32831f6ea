"""Candidate pairs of nearby points, numpy only (no spatial-index library, so `midog-eval score` starts fast).

`close_pairs` returns every same-case pair (a row, b row) whose x and y each differ by at most `distance`: a
superset of the pairs within a Euclidean (any z) or Chebyshev distance `distance`. Callers apply their exact rule
to the true coordinates afterwards, so a superset is all they need.

How: points go into square cells of side >= distance keyed by (case, cell x, cell y); a point's partners can
only lie in its own cell or the 8 around it, found by binary search in the other set's sorted keys (three
runs of consecutive keys, one per neighbouring column of cells).
Coordinates are first clipped to the overlap of both sets' ranges (padded by 2 cells): a point outside it is
farther than `distance` from every point of the other set, so clipping adds candidates but never loses one,
and bounds the key range whatever values a file holds. Cells grow when needed to keep keys within int64.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from worker.evaluation.types import FloatArray

IntArray = npt.NDArray[np.int64]

_MAX_CELLS_PER_AXIS = 1 << 20


def _empty() -> tuple[IntArray, IntArray]:
    return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)


def close_pairs(
    a_xy: FloatArray, a_case: IntArray, b_xy: FloatArray, b_case: IntArray, distance: float
) -> tuple[IntArray, IntArray]:
    """(a rows, b rows) of every same-case pair with |dx| <= distance and |dy| <= distance, and possibly some
    more (module docstring); in no particular order. Coordinates must be finite; distance > 0."""
    if len(a_xy) == 0 or len(b_xy) == 0:
        return _empty()
    a = np.asarray(a_xy, dtype=np.float64)[:, :2]
    b = np.asarray(b_xy, dtype=np.float64)[:, :2]
    lo = np.maximum(a.min(axis=0), b.min(axis=0)) - 2 * distance
    hi = np.minimum(a.max(axis=0), b.max(axis=0)) + 2 * distance
    if (lo > hi).any():
        return _empty()  # the two sets lie farther apart than `distance` on some axis
    cell = np.maximum(distance, (hi - lo) / _MAX_CELLS_PER_AXIS)
    # +1 keeps every neighbour cell index >= 0, and +3 cells per axis keep neighbours from wrapping to the next row
    n_x, n_y = (np.floor((hi - lo) / cell).astype(np.int64) + 3).tolist()
    n_cases = int(max(a_case.max(), b_case.max())) + 1
    if n_cases * n_x * n_y >= 1 << 62:
        raise ValueError(f"too many cases ({n_cases}) to index")

    def keys(xy: FloatArray, case: IntArray) -> IntArray:
        cells = np.floor((np.clip(xy, lo, hi) - lo) / cell).astype(np.int64) + 1
        out: IntArray = (case.astype(np.int64) * n_x + cells[:, 0]) * n_y + cells[:, 1]
        return out

    b_keys = keys(b, b_case)
    b_order = np.argsort(b_keys, kind="stable")
    b_sorted = b_keys[b_order]
    a_keys = keys(a, a_case)
    a_rows, b_rows = [], []
    for dx in (-1, 0, 1):
        # the three cells (dx, -1), (dx, 0), (dx, +1) have consecutive keys: one run of the sorted keys
        centre = a_keys + dx * n_y
        left = np.searchsorted(b_sorted, centre - 1, side="left")
        counts = np.searchsorted(b_sorted, centre + 1, side="right") - left
        total = int(counts.sum())
        if total == 0:
            continue
        # position k of the run of row r is left[r] + k
        starts = np.cumsum(counts) - counts
        offsets = np.arange(total, dtype=np.int64) - np.repeat(starts, counts)
        a_rows.append(np.repeat(np.arange(len(a_keys), dtype=np.int64), counts))
        b_rows.append(b_order[np.repeat(left, counts) + offsets])
    if not a_rows:
        return _empty()
    return np.concatenate(a_rows), np.concatenate(b_rows).astype(np.int64)
