"""Average precision at IoU 0.5 exactly as the official MIDOG 2022/2025 evaluation computes it. numpy only.

The official code feeds square boxes around points to torchmetrics' MeanAveragePrecision (pycocotools backend)
and reports `map_50`. This module reproduces those numerics without torch (docs/scoring.md, Average precision):
- every point becomes a box of half-size 0.01125 mm: corners computed in float64, stored as float32;
  x, y, w, h are formed in float32 (w = x2 - x1 in float32);
- IoU in float64 from those float32 values: iw = min(dx+dw, gx+gw) - max(dx, gx), ih likewise,
  inter = iw*ih when both are > 0, IoU = inter / ((dw*dh + gw*gh) - inter);
- probabilities are float32, a missing one is 0.5;
- per image, detections are ranked by probability with a stable sort (file order on ties); each in turn takes
  the still-unmatched ground truth with the highest IoU >= 0.5 (a later ground truth wins an exact tie);
- across the set, the per-image ranked lists are concatenated in case order and stably sorted by probability;
  precision = TP / (TP + FP + machine epsilon), made non-increasing from the right; the recall thresholds are
  numpy.arange(0, 1.01, 0.01), each looked up with searchsorted(side="left"); a threshold beyond the last
  recall contributes 0; AP is the mean over the 101 thresholds;
- cases with neither ground truth nor detections contribute nothing; a set without ground truth gives -1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from worker.evaluation.batch import stack
from worker.evaluation.neighbours import close_pairs
from worker.evaluation.types import MISSING_PROBABILITY, BoolArray, FloatArray

IntArray = npt.NDArray[np.int64]

BOX_HALF_SIZE_MM = 0.01125
IOU_THRESHOLD = 0.5
RECALL_THRESHOLDS = np.arange(0, 1.01, 0.01)


@dataclass(frozen=True, slots=True)
class RankedDetections:
    """Per-image matching done once, reusable for any subset of cases (overall, every group).

    Rows are in case order and, within a case, in rank order. scores: float32 probabilities as float64;
    matched: whether the detection matched a ground truth; case_ids: its case; n_gt: ground truth per case.
    """

    scores: FloatArray
    matched: BoolArray
    case_ids: IntArray
    n_gt: IntArray

    def average_precision(self, cases: npt.NDArray[np.bool_] | None = None) -> float:
        """AP over the selected cases (a boolean mask over cases; all cases when None)."""
        if cases is None:
            return _accumulate(self.scores, self.matched, int(self.n_gt.sum()))
        rows = cases[self.case_ids]
        return _accumulate(self.scores[rows], self.matched[rows], int(self.n_gt[cases].sum()))


def _xywh(points: FloatArray) -> npt.NDArray[np.float32]:
    """Boxes [x, y, w, h] in float32 around (x, y) points, formed as the official pipeline forms them."""
    x1 = (points[:, 0] - BOX_HALF_SIZE_MM).astype(np.float32)
    y1 = (points[:, 1] - BOX_HALF_SIZE_MM).astype(np.float32)
    x2 = (points[:, 0] + BOX_HALF_SIZE_MM).astype(np.float32)
    y2 = (points[:, 1] + BOX_HALF_SIZE_MM).astype(np.float32)
    return np.stack((x1, y1, x2 - x1, y2 - y1), axis=1)


def _iou(d: npt.NDArray[np.float32], g: npt.NDArray[np.float32]) -> FloatArray:
    """Row-wise IoU of paired [x, y, w, h] boxes, in float64 as pycocotools computes it."""
    d64, g64 = d.astype(np.float64), g.astype(np.float64)
    iw = np.minimum(d64[:, 0] + d64[:, 2], g64[:, 0] + g64[:, 2]) - np.maximum(d64[:, 0], g64[:, 0])
    ih = np.minimum(d64[:, 1] + d64[:, 3], g64[:, 1] + g64[:, 3]) - np.maximum(d64[:, 1], g64[:, 1])
    inter = np.where((iw > 0) & (ih > 0), iw * ih, 0.0)
    union = (d64[:, 2] * d64[:, 3] + g64[:, 2] * g64[:, 3]) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def rank_and_match(
    gt: Sequence[FloatArray], pred: Sequence[FloatArray], probabilities: Sequence[FloatArray]
) -> RankedDetections:
    """Ranks each case's detections and matches them to its ground truth at IoU >= 0.5 (module rules)."""
    scores32 = [np.where(np.isnan(p), MISSING_PROBABILITY, p).astype(np.float32) for p in probabilities]
    ranks = [np.argsort(-s, kind="stable") for s in scores32]
    ranked_points = [p[:, :2][r] for p, r in zip(pred, ranks, strict=True)]
    ranked_scores = np.concatenate(
        [np.zeros(0, dtype=np.float32)] + [s[r] for s, r in zip(scores32, ranks, strict=True)]
    )
    g = stack([a[:, :2] for a in gt], 2)
    d = stack(ranked_points, 2)
    g_box, d_box = _xywh(g.points), _xywh(d.points)
    matched = np.zeros(len(d.points), dtype=bool)
    if len(g.points) and len(d.points):
        g_idx, d_idx, iou = _overlapping_pairs(g_box, g.case_ids, d_box, d.case_ids)
        # Visiting order: detection rank, then highest IoU, then the later ground truth on an exact tie.
        order = np.lexsort((-g_idx, -iou, d_idx))
        matched = _greedy_by_detection(d_idx[order], g_idx[order], len(d.points), len(g.points))
    return RankedDetections(
        scores=ranked_scores.astype(np.float64),
        matched=matched,
        case_ids=d.case_ids,
        n_gt=np.diff(g.starts),
    )


def _overlapping_pairs(
    g_box: npt.NDArray[np.float32],
    g_case: IntArray,
    d_box: npt.NDArray[np.float32],
    d_case: IntArray,
) -> tuple[IntArray, IntArray, FloatArray]:
    """(gt row, detection row, IoU) for every same-case pair with IoU >= 0.5."""
    size = float(max(g_box[:, 2:].max(), d_box[:, 2:].max()))
    # Boxes can only overlap when their corners are closer than a box size in both axes.
    g_idx, d_idx = close_pairs(
        g_box[:, :2].astype(np.float64), g_case, d_box[:, :2].astype(np.float64), d_case, size * (1 + 1e-6)
    )
    same = g_case[g_idx] == d_case[d_idx]
    g_idx, d_idx = g_idx[same], d_idx[same]
    iou = _iou(d_box[d_idx], g_box[g_idx])
    keep = iou >= IOU_THRESHOLD
    return g_idx[keep], d_idx[keep], iou[keep]


def _greedy_by_detection(d_idx: IntArray, g_idx: IntArray, n_det: int, n_gt: int) -> BoolArray:
    """Each detection, in visiting order, takes its first still-unmatched ground truth."""
    det_done = bytearray(n_det)
    gt_used = bytearray(n_gt)
    for d, g in zip(d_idx.tolist(), g_idx.tolist(), strict=True):
        if det_done[d] or gt_used[g]:
            continue
        det_done[d] = 1
        gt_used[g] = 1
    return np.frombuffer(bytes(det_done), dtype=np.uint8).astype(bool)


def _accumulate(scores: FloatArray, matched: BoolArray, n_gt: int) -> float:
    """COCO accumulation for one class, one area range, all detections (module rules)."""
    if n_gt == 0:
        return -1.0
    order = np.argsort(-scores, kind="mergesort")
    tp = matched[order]
    tp_sum = np.cumsum(tp).astype(np.float64)
    fp_sum = np.cumsum(~tp).astype(np.float64)
    q = np.zeros(len(RECALL_THRESHOLDS))
    if len(tp):
        recall = tp_sum / n_gt
        precision = tp_sum / (fp_sum + tp_sum + np.spacing(1))
        precision = np.maximum.accumulate(precision[::-1])[::-1]
        idx = np.searchsorted(recall, RECALL_THRESHOLDS, side="left")
        inside = idx < len(precision)
        q[inside] = precision[idx[inside]]
    return float(np.mean(q))
