"""The official AP engine as a reference: pycocotools' COCOeval driven the way torchmetrics drives it.

Float32 xyxy boxes around each point, converted to x/y/w/h in float32 (torchmetrics' box_convert), float32
scores (a missing one is 0.5), maxDets [1, 10, 1000000], numpy.arange recall thresholds; evaluate, accumulate,
summarize, and stats[1] (map_50). One COCO image per case, in case order. A plain module shared by the AP tests
and bench/score.py (import it as `tests.evaluation.coco_reference`); pycocotools is a dev dependency.
"""

import contextlib
import io

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from worker.evaluation.ap import BOX_HALF_SIZE_MM

R = 7.5e-3


def _xywh32(points: np.ndarray) -> list[list[float]]:
    h = BOX_HALF_SIZE_MM
    xyxy = np.stack([points[:, 0] - h, points[:, 1] - h, points[:, 0] + h, points[:, 1] + h], axis=1)
    xyxy = xyxy.astype(np.float32)
    xywh = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)
    return xywh.tolist()


def reference_map50(gt: list[np.ndarray], pred: list[np.ndarray], scores: list[np.ndarray]) -> float:
    images = [{"id": i} for i in range(len(gt))]
    categories = [{"id": 1}]
    gt_anns, dt_anns = [], []
    for i, (g, p, s) in enumerate(zip(gt, pred, scores, strict=True)):
        for box in _xywh32(g):
            gt_anns.append(
                {
                    "id": len(gt_anns) + 1,
                    "image_id": i,
                    "bbox": box,
                    "area": box[2] * box[3],
                    "iscrowd": 0,
                    "category_id": 1,
                }
            )
        s32 = np.where(np.isnan(s), 0.5, s).astype(np.float32).tolist()
        for box, score in zip(_xywh32(p), s32, strict=True):
            dt_anns.append(
                {
                    "id": len(dt_anns) + 1,
                    "image_id": i,
                    "bbox": box,
                    "area": box[2] * box[3],
                    "iscrowd": 0,
                    "category_id": 1,
                    "score": score,
                }
            )
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt, coco_dt = COCO(), COCO()
        coco_gt.dataset = {"images": images, "annotations": gt_anns, "categories": categories}
        coco_dt.dataset = {"images": images, "annotations": dt_anns, "categories": categories}
        coco_gt.createIndex()
        coco_dt.createIndex()
        ev = COCOeval(coco_gt, coco_dt, iouType="bbox")
        ev.params.recThrs = np.array(np.arange(0, 1.01, 0.01).tolist(), dtype=np.float64)
        ev.params.maxDets = [1, 10, 1_000_000]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[1])


def random_set(seed: int) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Crowded cases with predictions exactly 7.5 um right of a point, ties, missing scores, empty cases."""
    rng = np.random.default_rng(seed)
    gt, pred, scores = [], [], []
    for _ in range(rng.integers(1, 9)):
        n_gt = int(rng.choice([0, 0, 1, 3, 8, 15]))
        g = np.zeros((n_gt, 3))
        g[:, :2] = rng.uniform(0.05, 0.25, size=(n_gt, 2)).round(4)
        parts = []
        if n_gt:
            take = rng.random(n_gt) < 0.6
            parts.append(g[take] + [R, 0.0, 0.0])  # exactly 7.5 um horizontally: IoU 0.5 in real arithmetic
            jitter = g[rng.random(n_gt) < 0.5].copy()
            jitter[:, :2] += rng.normal(0, 0.005, size=(len(jitter), 2))
            parts.append(jitter)
            parts.append(g[rng.random(n_gt) < 0.2])  # duplicates on the point itself
        n_fp = int(rng.integers(0, 6))
        fp = np.zeros((n_fp, 3))
        fp[:, :2] = rng.uniform(0.05, 0.25, size=(n_fp, 2))
        parts.append(fp)
        p = np.concatenate(parts) if parts else np.zeros((0, 3))
        p = p[rng.permutation(len(p))]
        s = rng.choice([0.2, 0.5, 0.5, 0.9, np.nan], size=len(p))  # ties and missing probabilities
        gt.append(g)
        pred.append(p)
        scores.append(s.astype(np.float64))
    return gt, pred, scores
