"""Scoring-core benchmark: the complete metrics of a MIDOG++-size set and a 1M-prediction set, on one core.

Baseline, measured in the same run: pycocotools' COCOeval (the engine behind the official AP numbers) computing
the overall AP of the same MIDOG++-size set. Targets (docs/performance.md, Scoring core): the complete metrics (F1, AP,
every group, 1,000-resample bootstrap CIs) of the MIDOG++-size set in under 0.5 s; 1M predictions over 1,000
images in under 10 s. Run: `.venv/bin/python bench/score.py` (prints a table; not a test).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # one core, as the target says; must precede the numpy import

import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the shared AP reference lives in tests/

from tests.evaluation.coco_reference import reference_map50
from worker.evaluation.io import read_predictions
from worker.evaluation.metrics import evaluate
from worker.evaluation.types import CasePredictions, GroundTruth


def synthetic_set(
    n_cases: int, gt_per_case: float, pred_per_case: float, n_groups: int, seed: int = 0
) -> tuple[GroundTruth, dict[str, CasePredictions], dict[str, str]]:
    """Regions of 1.8 x 1.35 mm; about 70% of the points found (jittered), the rest of the predictions false."""
    rng = np.random.default_rng(seed)
    cases, preds, groups = {}, {}, {}
    for i in range(n_cases):
        name = f"{i:04d}.tiff"
        n_gt = rng.poisson(gt_per_case)
        gt = np.c_[rng.uniform(0, 1.8, n_gt), rng.uniform(0, 1.35, n_gt), np.zeros(n_gt)]
        found = gt[rng.random(n_gt) < 0.7].copy()
        found[:, :2] += rng.normal(0, 0.003, size=(len(found), 2))
        n_fp = max(0, rng.poisson(pred_per_case) - len(found))
        false = np.c_[rng.uniform(0, 1.8, n_fp), rng.uniform(0, 1.35, n_fp), np.zeros(n_fp)]
        points = np.concatenate([found, false])
        probs = rng.uniform(0, 1, len(points)).round(3)
        cases[name] = gt
        preds[name] = CasePredictions.from_points(points, probs, probs >= 0.3)
        groups[name] = f"group {i % n_groups}"
    return GroundTruth(cases), preds, groups


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def pycocotools_ap(gt: GroundTruth, preds: dict[str, CasePredictions]) -> float:
    """The official AP engine on the same set (overall AP only), driven as torchmetrics drives it."""
    names = list(gt.cases)
    return reference_map50(
        [gt.cases[n] for n in names], [preds[n].points for n in names], [preds[n].probabilities for n in names]
    )


def write_predictions_json(preds: dict[str, CasePredictions], path: Path) -> None:
    doc = {
        name: {
            "type": "Multiple points",
            "points": [
                {"point": pt, "probability": pr, "name": "mitotic figure" if m else "non-mitotic figure"}
                for pt, pr, m in zip(p.points.tolist(), p.probabilities.tolist(), p.mitotic.tolist(), strict=True)
            ],
            "version": {"major": 1, "minor": 0},
        }
        for name, p in preds.items()
    }
    path.write_text(json.dumps(doc))


def main() -> None:
    rows: list[tuple[str, str]] = []
    gt, preds, groups = synthetic_set(100, 115, 165, 10)
    n_gt = sum(len(v) for v in gt.cases.values())
    n_pred = sum(len(v) for v in preds.values())
    report = evaluate(gt, preds, groups=groups, bootstrap=1000, seed=0)
    full = median_seconds(lambda: evaluate(gt, preds, groups=groups, bootstrap=1000, seed=0), 7)
    f1_only = median_seconds(lambda: evaluate(gt, preds, rules="midog2021"), 7)
    reference_ap = pycocotools_ap(gt, preds)
    baseline = median_seconds(lambda: pycocotools_ap(gt, preds), 3)
    assert abs(reference_ap - (report.overall.ap or 0.0)) < 1e-6, (reference_ap, report.overall.ap)
    rows += [
        ("MIDOG++-size set", f"100 cases, {n_gt} GT, {n_pred} predictions, 10 groups"),
        ("complete metrics (F1, AP, groups, 1000-resample CIs)", f"{full * 1000:.1f} ms (target < 500 ms)"),
        ("F1 counts only", f"{f1_only * 1000:.1f} ms"),
        ("baseline: pycocotools COCOeval, overall AP only", f"{baseline * 1000:.1f} ms"),
        ("ratio complete metrics / baseline", f"{full / baseline:.3f}"),
        ("AP ours vs pycocotools", f"{report.overall.ap:.9f} vs {reference_ap:.9f}"),
    ]

    big_gt, big_preds, big_groups = synthetic_set(1000, 700, 1000, 10, seed=1)
    n_big = sum(len(v) for v in big_preds.values())
    big = median_seconds(lambda: evaluate(big_gt, big_preds, groups=big_groups, bootstrap=1000, seed=0), 3)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "predictions.json"
        write_predictions_json(big_preds, path)
        size_mb = path.stat().st_size / 1e6
        parse = median_seconds(lambda: read_predictions(path), 1)
    rows += [
        ("large set", f"1000 cases, {sum(len(v) for v in big_gt.cases.values())} GT, {n_big} predictions"),
        ("complete metrics, from arrays", f"{big:.2f} s (target < 10 s)"),
        (f"reading + validating the {size_mb:.0f} MB JSON", f"{parse:.2f} s"),
        ("total, file to metrics", f"{big + parse:.2f} s"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()
