"""Percentile bootstrap over cases and ranking robustness. numpy only.

Resampling rule: cases are drawn with replacement, as many as there are; TP, FP and FN of the drawn cases are
summed (micro) and the F1 is recomputed from the sums. The 95% interval is the 2.5th and 97.5th percentile
(numpy's linear interpolation) of the resampled F1 values. Everything is seeded: the same seed, counts and
number of resamples give the same numbers.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from worker.evaluation.formulas import f1_score, prf
from worker.evaluation.types import Rules

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def resample_weights(n_cases: int, resamples: int, rng: np.random.Generator) -> FloatArray:
    """(resamples, n_cases) matrix: how often each case was drawn in each resample."""
    draws = rng.integers(0, n_cases, size=(resamples, n_cases))
    flat = (draws + np.arange(resamples)[:, None] * n_cases).ravel()
    return np.bincount(flat, minlength=resamples * n_cases).reshape(resamples, n_cases).astype(np.float64)


def f1_interval(
    counts: IntArray, *, resamples: int, seed: int | tuple[int, ...], rules: Rules = Rules.MIDOG2022
) -> tuple[float, float] | None:
    """95% percentile interval of the micro F1 over cases; counts is (n_cases, 3) [TP, FP, FN].

    None when there are no cases or no resamples.
    """
    if resamples <= 0 or len(counts) == 0:
        return None
    rng = np.random.default_rng(seed)
    sums = resample_weights(len(counts), resamples, rng) @ counts.astype(np.float64)
    f1 = f1_score(sums[:, 0], sums[:, 1], sums[:, 2], rules)
    low, high = np.percentile(f1, [2.5, 97.5])
    return float(low), float(high)


def intervals(
    counts: IntArray, *, resamples: int, seed: int | tuple[int, ...], rules: Rules = Rules.MIDOG2022
) -> dict[str, tuple[float, float]]:
    """95% percentile intervals of F1, precision and recall from the same resamples (the F1 one equals
    `f1_interval` with the same arguments); empty when there are no cases or no resamples."""
    if resamples <= 0 or len(counts) == 0:
        return {}
    rng = np.random.default_rng(seed)
    sums = resample_weights(len(counts), resamples, rng) @ counts.astype(np.float64)
    found: dict[str, tuple[float, float]] = {}
    for metric in COUNT_METRICS:
        low, high = np.percentile(_metric(sums, metric, rules), [2.5, 97.5])
        found[metric] = (float(low), float(high))
    return found


def competition_ranks(scores: FloatArray) -> IntArray:
    """Ranks along the last axis, 1 = best (highest); ties share the best rank of their block ("1224")."""
    # rank = 1 + number of entries with a strictly higher score
    higher: IntArray = (scores[..., None, :] > scores[..., :, None]).sum(axis=-1)
    return 1 + higher


COUNT_METRICS = ("f1", "precision", "recall")
# Classification counts carry TN too: [TP, FP, FN, TN], atypical positive.
CLASSIFICATION_COUNT_METRICS = (*COUNT_METRICS, "balanced_accuracy")


def _metric(sums: FloatArray, metric: str, rules: Rules) -> FloatArray:
    """The metric of summed counts: detection [TP, FP, FN] under `rules`; classification [TP, FP, FN, TN] with
    0 for a rate over no patch (scikit-learn's zero_division), as the classification scores define them."""
    if sums.shape[-1] == 4:
        return _classification_metric(sums, metric)
    precision, recall, f1 = prf(sums[..., 0], sums[..., 1], sums[..., 2], rules)
    return {"f1": f1, "precision": precision, "recall": recall}[metric]


def _classification_metric(sums: FloatArray, metric: str) -> FloatArray:
    tp, fp, fn, tn = (sums[..., i] for i in range(4))

    def rate(hits: FloatArray, total: FloatArray) -> FloatArray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(total > 0, hits / total, 0.0)

    if metric == "balanced_accuracy":
        return (rate(tp, tp + fn) + rate(tn, tn + fp)) / 2
    return {"f1": rate(2 * tp, 2 * tp + fp + fn), "precision": rate(tp, tp + fp), "recall": rate(tp, tp + fn)}[metric]


def rank_robustness(
    counts: IntArray,
    *,
    resamples: int = 1000,
    seed: int = 0,
    rules: Rules = Rules.MIDOG2022,
    metric: str = "f1",
) -> FloatArray:
    """Share of bootstrap resamples in which each entry keeps its rank by `metric` (f1, precision or recall,
    recomputed from the summed counts under `rules`, as the leaderboard ranks them; with classification counts
    also balanced accuracy).

    counts: (n_entries, n_cases, 3) [TP, FP, FN] of every entry on the same cases, or (n_entries, n_stacks, 4)
    [TP, FP, FN, TN] for classification. The resamples of cases are
    shared across entries, so entries are compared on the same drawn test sets. AP cannot be recomputed from
    counts; callers do not ask for it.
    """
    known = CLASSIFICATION_COUNT_METRICS if counts.shape[-1] == 4 else COUNT_METRICS
    if metric not in known:
        raise ValueError(f"rank robustness is computed from counts: {', '.join(known)}, not {metric!r}")
    n_entries, n_cases, _ = counts.shape
    if n_entries == 0:
        return np.zeros(0)
    full = counts.sum(axis=1).astype(np.float64)
    base = competition_ranks(_metric(full, metric, rules))
    if n_cases == 0 or resamples <= 0:
        return np.ones(n_entries)
    weights = resample_weights(n_cases, resamples, np.random.default_rng(seed))
    sums = np.einsum("bc,eck->bek", weights, counts.astype(np.float64))
    ranks = competition_ranks(_metric(sums, metric, rules))
    kept: FloatArray = (ranks == base[None, :]).mean(axis=0)
    return kept
