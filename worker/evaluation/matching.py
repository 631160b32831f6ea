"""Matching of predicted points to ground-truth points within a radius. numpy only (scipy for the optimal matching).

The default is the official greedy rule (docs/scoring.md, Matching):
- each ground-truth point, in file order, takes the nearest still-unused prediction within the radius;
- "within" is inclusive and compares squared Euclidean distances over all three coordinates,
  (dx*dx + dy*dy) + dz*dz <= r*r, as the official implementation does;
- equidistant candidates: the lower prediction index wins;
- an empty ground truth makes every prediction a false positive; no predictions make every point a miss.
`optimal` (maximum-cardinality matching within the radius) is an extra, never the default.
All cases are matched in one pass: one KD-tree over every case finds candidate pairs (batch.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from worker.evaluation.batch import Stacked, stack
from worker.evaluation.neighbours import close_pairs
from worker.evaluation.types import FloatArray

IntArray = npt.NDArray[np.int64]

# Candidates are searched with a slightly larger radius; the exact rule is then applied to the true coordinates.
_SEARCH_SLACK = 1.0 + 1e-6


@dataclass(frozen=True, slots=True)
class Counts:
    """Detection counts of one case or a sum of cases."""

    tp: int
    fp: int
    fn: int


def _pairs(gt: Stacked, pred: Stacked, radius: float) -> tuple[IntArray, IntArray, FloatArray]:
    """All (gt row, prediction row, squared distance) within the radius, same case only.

    Sorted by gt row, then squared distance, then prediction row: the order the greedy rule visits them.
    """
    empty = np.zeros(0, dtype=np.int64)
    if len(gt.points) == 0 or len(pred.points) == 0:
        return empty, empty, np.zeros(0)
    g_idx, p_idx = close_pairs(gt.points, gt.case_ids, pred.points, pred.case_ids, radius * _SEARCH_SLACK)
    diff = pred.points[p_idx] - gt.points[g_idx]
    sq = diff * diff
    d2 = (sq[:, 0] + sq[:, 1]) + sq[:, 2]
    keep = (d2 <= radius * radius) & (gt.case_ids[g_idx] == pred.case_ids[p_idx])
    g_idx, p_idx, d2 = g_idx[keep], p_idx[keep], d2[keep]
    order = np.lexsort((p_idx, d2, g_idx))
    return g_idx[order], p_idx[order], d2[order]


def candidate_pairs(gt: Stacked, pred: Stacked, radius: float) -> tuple[IntArray, IntArray, FloatArray]:
    """(gt row, prediction row, squared distance) of every same-case pair within the radius (inclusive rule of
    the module docstring), in the order the greedy rule visits them: gt row, squared distance, prediction row."""
    return _pairs(gt, pred, radius)


def _greedy(g_idx: IntArray, p_idx: IntArray, n_gt: int, n_pred: int) -> npt.NDArray[np.bool_]:
    """The greedy rule over pairs in visiting order; returns which gt rows were matched."""
    used = bytearray(n_pred)
    matched = bytearray(n_gt)
    for g, p in zip(g_idx.tolist(), p_idx.tolist(), strict=True):
        if matched[g] or used[p]:
            continue
        used[p] = 1
        matched[g] = 1
    return np.frombuffer(bytes(matched), dtype=np.uint8).astype(bool)


def _optimal(g_idx: IntArray, p_idx: IntArray, n_gt: int, n_pred: int) -> npt.NDArray[np.bool_]:
    """Maximum-cardinality matching; returns which gt rows were matched."""
    matched = np.zeros(n_gt, dtype=bool)
    if len(g_idx) == 0:
        return matched
    # scipy only here: the optimal matching is an extra, and importing scipy costs `score` a third of a second
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import maximum_bipartite_matching

    graph = csr_matrix((np.ones(len(g_idx)), (g_idx, p_idx)), shape=(n_gt, n_pred))
    matched[maximum_bipartite_matching(graph, perm_type="column") >= 0] = True
    return matched


def match_cases(
    gt: Sequence[FloatArray], pred: Sequence[FloatArray], radius: float, *, method: str = "greedy"
) -> IntArray:
    """Counts per case as an (n_cases, 3) int array of [TP, FP, FN]; gt[i] and pred[i] belong to case i."""
    if len(gt) != len(pred):
        raise ValueError("gt and pred must list the same cases")
    g, p = stack(gt, 3), stack(pred, 3)
    g_idx, p_idx, _ = _pairs(g, p, radius)
    assign = _greedy if method == "greedy" else _optimal
    matched = assign(g_idx, p_idx, len(g.points), len(p.points))
    n_cases = len(gt)
    tp = np.bincount(g.case_ids[matched], minlength=n_cases).astype(np.int64)
    n_gt = np.diff(g.starts)
    n_pred = np.diff(p.starts)
    return np.stack((tp, n_pred - tp, n_gt - tp), axis=1)


def match_greedy(gt: FloatArray, pred: FloatArray, radius: float) -> Counts:
    """Counts TP/FP/FN of one case with the official greedy rule (module docstring)."""
    tp, fp, fn = match_cases([gt], [pred], radius)[0].tolist()
    return Counts(tp, fp, fn)


def match_optimal(gt: FloatArray, pred: FloatArray, radius: float) -> Counts:
    """Counts TP/FP/FN of one case with a maximum-cardinality matching within the radius."""
    tp, fp, fn = match_cases([gt], [pred], radius, method="optimal")[0].tolist()
    return Counts(tp, fp, fn)
