"""FROC benchmark (MIDOG 2025 Track 1, rules midog2025): the scoring core against the official per-threshold loop.

A synthetic 365-case Track 1 set (12 tumour domains, three roi types; regions of 1.8 x 1.35 mm; 100-150 mitotic
figures per case, about 70% of them found with a few um of jitter, false detections up to about 150 predictions
per case; random probabilities rounded to 3 decimals, so scores tie; "mitotic figure" at >= 0.5). On the same
data, in the same run, the FROC scores of the 16 official sets (whole set, 12 tumour domains, 3 roi types) by:
  (a) a direct port of the official calc_froc_score loop: per set, per threshold, per case, the points with
      score >= t as [x, y, 0] matched with the repository's per-case greedy matching (match_greedy);
  (a') the same loop with evalutils' own matching (score_detection: sklearn BallTree radius query sorted by
      distance, nearest unused wins), when scikit-learn is installed;
  (b) the scoring core, worker/evaluation/froc.py (froc_scores), all 16 sets in one pass.
It asserts that (a), (a') and (b) give identical floats (==), prints the times and their ratio (target: (b) at
most 1/50 of (a)), and times the whole `midog-eval score --rules midog2025` process on that set, start-up and
file reading included. Run: `.venv/bin/python bench/froc.py` (prints a table; not a test).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # one core; must precede the numpy import

import json
import math
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.score import best_process_seconds
from tests.evaluation.test_midog2025 import evalutils_counts, official_froc
from worker.evaluation.froc import froc_scores
from worker.evaluation.matching import match_greedy
from worker.evaluation.types import DEFAULT_RADIUS_MM, ROI_TYPES

N_CASES, N_DOMAINS = 365, 12


def track1_set(seed: int = 0) -> tuple[dict[str, Any], dict[str, Any]]:
    """Ground truth and predictions in the official 2025 formats (module docstring)."""
    rng = np.random.default_rng(seed)
    gt: dict[str, Any] = {}
    preds: dict[str, Any] = {}
    for i in range(N_CASES):
        name = f"{i:03d}.tiff"
        n_gt = int(rng.integers(100, 151))
        g = np.c_[rng.uniform(0, 1.8, n_gt), rng.uniform(0, 1.35, n_gt), np.zeros(n_gt)]
        found = g[rng.random(n_gt) < 0.7].copy()
        found[:, :2] += rng.normal(0, 0.003, size=(len(found), 2))
        n_false = max(0, int(rng.integers(130, 171)) - len(found))
        false = np.c_[rng.uniform(0, 1.8, n_false), rng.uniform(0, 1.35, n_false), np.zeros(n_false)]
        points = np.concatenate([found, false])[rng.permutation(len(found) + n_false)]
        probs = rng.uniform(0, 1, len(points)).round(3)
        gt[name] = {"annotations": g.tolist(), "tumor domain": i % N_DOMAINS, "roi type": ROI_TYPES[i % 3]}
        preds[name] = {
            "type": "Multiple points",
            "points": [
                {"name": "mitotic figure" if p >= 0.5 else "non-mitotic figure", "point": pt, "probability": p}
                for pt, p in zip(points.tolist(), probs.tolist(), strict=True)
            ],
            "version": {"major": 1, "minor": 0},
        }
    return gt, preds


def repository_counts(gt: list[list[float]], pred: list[list[float]], radius: float) -> tuple[int, int, int]:
    c = match_greedy(
        np.array(gt, dtype=np.float64).reshape(-1, 3), np.array(pred, dtype=np.float64).reshape(-1, 3), radius
    )
    return c.tp, c.fp, c.fn


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def same(a: Sequence[float], b: Sequence[float]) -> bool:
    return all((math.isnan(x) and math.isnan(y)) or x == y for x, y in zip(a, b, strict=True))


def main() -> None:
    gt_doc, pred_doc = track1_set()
    names = list(gt_doc)
    gt_lists = [gt_doc[n]["annotations"] for n in names]
    det_lists = [
        [[*p["point"], int(p["name"] == "mitotic figure"), p["probability"]] for p in pred_doc[n]["points"]]
        for n in names
    ]
    domains = sorted({gt_doc[n]["tumor domain"] for n in names})
    sets: list[tuple[str, list[int]]] = [("all", list(range(len(names))))]
    sets += [(f"tumor {d}", [i for i, n in enumerate(names) if gt_doc[n]["tumor domain"] == d]) for d in domains]
    sets += [(f"roi {r}", [i for i, n in enumerate(names) if gt_doc[n]["roi type"] == r]) for r in ROI_TYPES]
    n_gt = sum(len(g) for g in gt_lists)
    n_pred = sum(len(d) for d in det_lists)

    def direct(count: Callable[[list[list[float]], list[list[float]], float], tuple[int, int, int]]) -> list[float]:
        return [
            official_froc(
                [gt_lists[i] for i in idx], [det_lists[i] for i in idx], count=count, radius=DEFAULT_RADIUS_MM
            )
            for _, idx in sets
        ]

    gt_arrays = [np.array(g, dtype=np.float64).reshape(-1, 3) for g in gt_lists]
    pt_arrays = [np.array([d[:3] for d in det], dtype=np.float64).reshape(-1, 3) for det in det_lists]
    sc_arrays = [np.array([d[4] for d in det], dtype=np.float64) for det in det_lists]
    masks: list[np.ndarray | None] = []
    for _, idx in sets:
        mask = np.zeros(len(names), dtype=bool)
        mask[idx] = True
        masks.append(mask)

    def ours() -> list[float]:
        return froc_scores(gt_arrays, pt_arrays, sc_arrays, masks)

    ours()  # warm-up (imports, first allocation)
    t_ours = min(timed(ours)[0] for _ in range(5))
    fast = ours()
    t_direct, reference = timed(lambda: direct(repository_counts))
    assert same(fast, reference), (fast, reference)
    rows = [
        ("set", f"{len(names)} cases, {n_gt} GT points, {n_pred} predictions, 16 FROC sets (all, 12 domains, 3 roi)"),
        ("(a) official loop, repository per-case greedy", f"{t_direct:.2f} s"),
    ]
    try:
        import sklearn  # noqa: F401
    except ImportError:
        rows.append(("(a') official loop, evalutils' BallTree matching", "skipped (no scikit-learn)"))
    else:
        t_evalutils, by_evalutils = timed(lambda: direct(evalutils_counts))
        assert same(fast, by_evalutils), (fast, by_evalutils)
        rows.append(("(a') official loop, evalutils' BallTree matching", f"{t_evalutils:.2f} s"))
    rows += [
        ("(b) scoring core, froc_scores (best of 5)", f"{t_ours * 1000:.1f} ms"),
        ("ratio (a) / (b)", f"{t_direct / t_ours:.0f}x (target >= 50x)"),
        ("FROC identical (==), all 16 sets", f"yes; overall {fast[0]!r}"),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        gt_path, pred_path, out_path = Path(tmp) / "gt.json", Path(tmp) / "predictions.json", Path(tmp) / "m.json"
        gt_path.write_text(json.dumps(gt_doc))
        pred_path.write_text(json.dumps(pred_doc))
        command = [
            str(ROOT / ".venv" / "bin" / "midog-eval"),
            "score",
            "--rules",
            "midog2025",
            "--ground-truth",
            str(gt_path),
            "--predictions",
            str(pred_path),
            "--output",
            str(out_path),
        ]
        t_process = best_process_seconds(command, 3)
        aggregates = json.loads(out_path.read_text())["aggregates"]
        assert aggregates["froc_auc"] == fast[0], (aggregates["froc_auc"], fast[0])
        mb = (gt_path.stat().st_size + pred_path.stat().st_size) / 1e6
    rows.append(
        (
            "whole `midog-eval score --rules midog2025` process",
            f"{t_process:.2f} s (best of 3; start-up, {mb:.0f} MB of JSON, F1, AP, FROC, all groups)",
        )
    )
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()
