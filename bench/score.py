"""Scoring-core benchmark: the complete metrics of a MIDOG++-size set and a 1M-prediction set, on one core.

Baseline, measured in the same run: pycocotools' COCOeval (the engine behind the official AP numbers) computing
the overall AP of the same MIDOG++-size set. Targets (docs/performance.md, Scoring core): the complete metrics (F1, AP,
every group, 1,000-resample bootstrap CIs) of the MIDOG++-size set in under 0.5 s; the whole `midog-eval score`
process on that set, as a user runs it (interpreter and command start-up, reading the files, scoring, writing
metrics.json) in at most 0.5 s, beside a bare `python -c pass` measured in the same run; 1M predictions over
1,000 images in under 10 s. Run: `.venv/bin/python bench/score.py` (prints a table; not a test).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # one core, as the target says; must precede the numpy import

import json
import shutil
import statistics
import subprocess
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


def write_ground_truth_json(gt: GroundTruth, path: Path) -> None:
    """The official 2022 ground-truth format: image name -> list of [x, y, z] in mm."""
    path.write_text(json.dumps({name: points.tolist() for name, points in gt.cases.items()}))


def best_process_seconds(argv: list[str], repeats: int) -> float:
    """The fastest of `repeats` runs of a whole process (start-up included), each checked to succeed, after one
    untimed run. Bytecode caching is on, as in a user's installation, even where the environment turns it off
    (PYTHONDONTWRITEBYTECODE): the untimed run writes the caches."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, env=env)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, env=env)
        times.append(time.perf_counter() - start)
    return min(times)


def score_process_rows(gt: GroundTruth, preds: dict[str, CasePredictions]) -> list[tuple[str, str]]:
    """`midog-eval score` on the set as files, timed as a whole process, and a bare interpreter beside it."""
    command = shutil.which("midog-eval", path=str(Path(sys.executable).parent))
    if command is None:
        return [("whole `midog-eval score` process", "skipped: midog-eval is not installed beside this Python")]
    with tempfile.TemporaryDirectory() as tmp:
        truth, predictions, out = Path(tmp) / "gt.json", Path(tmp) / "predictions.json", Path(tmp) / "metrics.json"
        write_ground_truth_json(gt, truth)
        write_predictions_json(preds, predictions)
        argv = [command, "score", "--ground-truth", str(truth), "--predictions", str(predictions)]
        whole = best_process_seconds([*argv, "--output", str(out)], 7)
        bare = best_process_seconds([sys.executable, "-c", "pass"], 7)
        size_mb = (truth.stat().st_size + predictions.stat().st_size) / 1e6
    return [
        (
            "whole `midog-eval score` process (best of 7)",
            f"{whole * 1000:.0f} ms (target <= 500 ms; {size_mb:.1f} MB of JSON in)",
        ),
        ("baseline: bare `python -c pass` (best of 7)", f"{bare * 1000:.0f} ms"),
        ("ratio whole score process / bare interpreter", f"{whole / bare:.1f}"),
    ]


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
    rows += score_process_rows(gt, preds)

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
