"""Precision, recall and F1 from summed counts, vectorised over any leading axes. numpy only.

midog2022 and midog2025, eps = 1e-6:
    precision = TP / (TP + FP + eps), recall = TP / (TP + FN + eps), F1 = (2TP + eps) / (2TP + FP + FN + eps);
    so a group with no ground truth and no detections has precision = recall = 0 and F1 = 1.
midog2021, plain formulas: precision = TP / (TP + FP), recall = TP / (TP + FN), F1 = 2TP / (2TP + FP + FN).
    The official 2021 code crashed on 0/0; we define each 0/0 as the eps -> 0 limit of the 2022 formulas:
    precision 0, recall 0, F1 1 (nothing to find and nothing claimed).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from worker.evaluation.types import Rules

EPS = 1e-6
FloatArray = npt.NDArray[np.float64]


def prf(
    tp: npt.ArrayLike, fp: npt.ArrayLike, fn: npt.ArrayLike, rules: Rules = Rules.MIDOG2022
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """(precision, recall, F1) for counts of any shape, by the rules in the module docstring."""
    t = np.asarray(tp, dtype=np.float64)
    p = np.asarray(fp, dtype=np.float64)
    n = np.asarray(fn, dtype=np.float64)
    if rules in (Rules.MIDOG2022, Rules.MIDOG2025):
        return t / (t + p + EPS), t / (t + n + EPS), (2 * t + EPS) / (2 * t + p + n + EPS)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(t + p > 0, t / (t + p), 0.0)
        recall = np.where(t + n > 0, t / (t + n), 0.0)
        f1 = np.where(2 * t + p + n > 0, 2 * t / (2 * t + p + n), 1.0)
    return precision, recall, f1


def f1_score(tp: npt.ArrayLike, fp: npt.ArrayLike, fn: npt.ArrayLike, rules: Rules = Rules.MIDOG2022) -> FloatArray:
    """F1 alone, same rules as prf."""
    return prf(tp, fp, fn, rules)[2]
