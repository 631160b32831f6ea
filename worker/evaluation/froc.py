"""FROC score of MIDOG 2025 Track 1 (`froc_auc`), with the official evaluator's numbers. numpy only.

The official rule, for one set of cases (the whole set, one tumour domain or one roi type):
1. detections: every predicted point of the set's cases, whatever its name, scored by its probability. A set
   without cases, or without any detection, scores NaN.
2. thresholds: the single score when the lowest and the highest are equal, else
   numpy.linspace(lowest, highest, 40), ascending. The official code keys its results by threshold, so a value
   that linspace repeats (a range of a few ulps) counts once.
3. per threshold t: in every case, the points with score >= t, as [x, y, 0], are matched to the case's ground
   truth with the greedy rule (matching.py); TP and FN are summed over the cases,
   recall = TP / (TP + FN + 1e-6), and FPPI = numpy.mean of the cases' FP counts over all cases of the set
   (a case without detections counts with 0).
4. numpy.argsort(FPPI) (default kind) over the arrays in threshold order; the recall is interpolated with
   numpy.interp(numpy.linspace(0, 8, 50), FPPI sorted, recall sorted, left=0, right=the last sorted recall);
   the score is numpy.trapezoid of that over numpy.linspace(0, 8, 50). Not normalised: it lies in [0, 8].

Why one pass gives the per-threshold matchings exactly (counts_at_thresholds):
- Filtering by score keeps the order of the remaining predictions and their coordinates, so at threshold t the
  greedy rule visits exactly the candidate pairs (gt, prediction) of the unfiltered set whose prediction has
  score >= t, in the same order (gt row, squared distance, prediction row). The pairs are searched once.
- Each ground-truth point and each prediction carries one bit per threshold (a Python int used as a bit set):
  "still unmatched" and "active and still unused". Visiting the pairs once in that order and, at each pair,
  taking the thresholds where both bits are set runs the greedy rule for every threshold side by side; the
  thresholds never interact.
- A pair whose ground-truth point and prediction have no other candidate is a hit exactly at the thresholds
  where its prediction is active; those pairs are counted with numpy and skip the loop.
- The matching of a case at a threshold depends only on that case and that threshold, so the counts of one
  pass over the union of all sets' thresholds serve every set: per set, its columns are summed over its cases,
  then step 4 runs on the same arrays, with the same numpy calls in the same order, as the official code.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from worker.evaluation.batch import stack
from worker.evaluation.matching import candidate_pairs
from worker.evaluation.types import DEFAULT_RADIUS_MM, BoolArray, FloatArray

IntArray = npt.NDArray[np.int64]

N_THRESHOLDS = 40
MAX_FPPI = 8
N_FPPI_POINTS = 50
RECALL_EPS = 1e-6
_MAX_BITS = 2048  # thresholds handled in one pass; more sets are split into several passes

# numpy.trapz became numpy.trapezoid in numpy 2.0 (same arithmetic); the official code calls numpy.trapz.
_trapezoid: Callable[..., Any] = np.trapezoid if hasattr(np, "trapezoid") else np.trapz  # type: ignore[attr-defined,unused-ignore]


def threshold_list(scores: FloatArray) -> FloatArray:
    """The official thresholds for a set whose detections have these scores (at least one), in the official
    order (ascending), repeated values dropped as the official dict drops them."""
    low, high = np.min(scores), np.max(scores)
    values: list[Any] = [low] if low == high else np.linspace(low, high, N_THRESHOLDS).tolist()
    return np.array(list(dict.fromkeys(values)), dtype=np.float64)


@dataclass(frozen=True, slots=True)
class ThresholdCounts:
    """Greedy counts of every case at every threshold: rows are cases, columns `thresholds` (ascending)."""

    thresholds: FloatArray
    tp: IntArray
    fp: IntArray
    fn: IntArray


def _count_above(case_ids: IntArray, k: IntArray, n_cases: int, n_thresholds: int) -> IntArray:
    """(n_cases, n_thresholds): per case and threshold index j, how many rows have k > j."""
    width = n_thresholds + 1
    hist = np.bincount(case_ids * width + k, minlength=n_cases * width).reshape(n_cases, width)
    counts: IntArray = np.cumsum(hist[:, :0:-1], axis=1)[:, ::-1].astype(np.int64)
    return counts


def _greedy_bits(
    g_idx: IntArray, p_idx: IntArray, k: IntArray, gt_case: IntArray, n_cases: int, n_thresholds: int
) -> IntArray:
    """TP per case and threshold of the greedy rule over these pairs (visiting order), every threshold at once.

    k[p]: prediction p is active at threshold indices < k[p]. Bit j of a ground-truth point's word: still
    unmatched at threshold j; bit j of a prediction's word: active and still unused at threshold j.
    """
    gts, g_local = np.unique(g_idx, return_inverse=True)
    preds, p_local = np.unique(p_idx, return_inverse=True)
    full = (1 << n_thresholds) - 1
    unmatched = [full] * len(gts)
    unused = [(1 << kk) - 1 for kk in k[preds].tolist()]
    for g, p in zip(g_local.tolist(), p_local.tolist(), strict=True):
        taken = unmatched[g] & unused[p]
        if taken:
            unmatched[g] ^= taken
            unused[p] ^= taken
    n_bytes = (n_thresholds + 7) // 8
    words = b"".join((full ^ w).to_bytes(n_bytes, "little") for w in unmatched)
    bits = np.unpackbits(np.frombuffer(words, dtype=np.uint8).reshape(len(gts), n_bytes), axis=1, bitorder="little")
    tp = np.zeros((n_cases, n_thresholds), dtype=np.int64)
    np.add.at(tp, gt_case[gts], bits[:, :n_thresholds])
    return tp


def counts_at_thresholds(
    gt: Sequence[FloatArray],
    pred: Sequence[FloatArray],
    scores: Sequence[FloatArray],
    thresholds: npt.ArrayLike,
    radius: float = DEFAULT_RADIUS_MM,
) -> ThresholdCounts:
    """TP, FP and FN of every case at every threshold, equal to matching each case's points with score >= t
    (as [x, y, 0]) against its ground truth with the greedy rule, threshold by threshold (module docstring).

    gt[i], pred[i] ((n, 3) mm) and scores[i] belong to case i; thresholds are sorted and made unique.
    """
    if not (len(gt) == len(pred) == len(scores)):
        raise ValueError("gt, pred and scores must list the same cases")
    thr = np.unique(np.asarray(thresholds, dtype=np.float64))
    n_cases, n_thr = len(gt), len(thr)
    flat: list[FloatArray] = []
    for points in pred:
        xy0 = np.zeros((len(points), 3))
        xy0[:, :2] = points.reshape(-1, 3)[:, :2]
        flat.append(xy0)
    g, p = stack(gt, 3), stack(flat, 3)
    all_scores = np.concatenate([np.zeros(0)] + [np.asarray(s, dtype=np.float64).reshape(-1) for s in scores])
    if len(all_scores) != len(p.points):
        raise ValueError("every prediction needs one score")
    k = np.searchsorted(thr, all_scores, side="right").astype(np.int64)  # active where threshold <= score
    active = _count_above(p.case_ids, k, n_cases, n_thr)
    g_idx, p_idx, _ = candidate_pairs(g, p, radius)
    alone = (np.bincount(g_idx, minlength=len(g.points))[g_idx] == 1) & (
        np.bincount(p_idx, minlength=len(p.points))[p_idx] == 1
    )
    tp = _count_above(g.case_ids[g_idx[alone]], k[p_idx[alone]], n_cases, n_thr)
    if not alone.all():
        tp += _greedy_bits(g_idx[~alone], p_idx[~alone], k, g.case_ids, n_cases, n_thr)
    n_gt = np.diff(g.starts)
    return ThresholdCounts(thresholds=thr, tp=tp, fp=active - tp, fn=n_gt[:, None] - tp)


def froc_from_counts(tp: IntArray, fn: IntArray, fp: IntArray, n_cases: int) -> float:
    """Step 4 of the module docstring, from TP, FN and summed FP per threshold (official threshold order)."""
    recall = tp / (tp + fn + RECALL_EPS)
    fppi = fp / n_cases  # numpy.mean of integer FP counts: their sum is exact, then one division
    sort_idx = np.argsort(fppi)
    fppi_sorted = fppi[sort_idx]
    recall_sorted = recall[sort_idx]
    fppi_eval = np.linspace(0, MAX_FPPI, N_FPPI_POINTS)
    recall_interp = np.interp(fppi_eval, fppi_sorted, recall_sorted, left=0, right=recall_sorted[-1])
    return float(_trapezoid(recall_interp, fppi_eval))


def froc_scores(
    gt: Sequence[FloatArray],
    pred: Sequence[FloatArray],
    scores: Sequence[FloatArray],
    sets: Sequence[BoolArray | None],
    radius: float = DEFAULT_RADIUS_MM,
) -> list[float]:
    """The FROC score of each set of cases (a boolean mask over cases; None for all), NaN where the set has no
    case or no detection. gt[i], pred[i] and scores[i] belong to case i; every point of pred counts."""
    n_cases = len(gt)
    sizes = np.array([len(s) for s in scores], dtype=np.int64)
    case_of_score = np.repeat(np.arange(n_cases, dtype=np.int64), sizes)
    all_scores = np.concatenate([np.zeros(0)] + [np.asarray(s, dtype=np.float64).reshape(-1) for s in scores])
    masks = [np.ones(n_cases, dtype=bool) if s is None else np.asarray(s, dtype=bool) for s in sets]
    results = [math.nan] * len(masks)
    pending: list[tuple[int, FloatArray]] = []
    for index, mask in enumerate(masks):
        if not mask.any():
            continue
        in_set = all_scores[mask[case_of_score]]
        if len(in_set) == 0:
            continue
        pending.append((index, threshold_list(in_set)))
    start = 0
    while start < len(pending):  # passes of at most _MAX_BITS thresholds (at least one set each)
        stop, bits = start + 1, len(pending[start][1])
        while stop < len(pending) and bits + len(pending[stop][1]) <= _MAX_BITS:
            bits += len(pending[stop][1])
            stop += 1
        chunk = pending[start:stop]
        in_chunk = np.logical_or.reduce([masks[i] for i, _ in chunk])
        cases = np.flatnonzero(in_chunk).tolist()
        counts = counts_at_thresholds(
            [gt[c] for c in cases],
            [pred[c] for c in cases],
            [scores[c] for c in cases],
            np.concatenate([t for _, t in chunk]),
            radius,
        )
        for index, thresholds in chunk:
            rows = masks[index][in_chunk]
            cols = np.searchsorted(counts.thresholds, thresholds)
            results[index] = froc_from_counts(
                counts.tp[rows][:, cols].sum(axis=0),
                counts.fn[rows][:, cols].sum(axis=0),
                counts.fp[rows][:, cols].sum(axis=0),
                int(rows.sum()),
            )
        start = stop
    return results
