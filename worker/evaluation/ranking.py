"""Ranking analysis: how certain a leaderboard's order is, and how far entries fall on unseen groups. numpy only.

Rules shared by every function here:
- counts are per-case [TP, FP, FN]; a resample sums the drawn cases' counts and recomputes the pooled (micro) F1
  under the phase's rules, never a mean of per-case F1.
- Resampling is paired: one draw of cases serves every entry. With `stratify` (a group label per case) each group
  g keeps its n_g cases: n_g draws with replacement from g's own cases; without it, n draws from all cases.
- Seeded with `numpy.random.default_rng(seed)`; groups are drawn in sorted label order. The same seed and labels
  give the same draws to every function, and without groups the draws equal `bootstrap.resample_weights`'.
- Ranks are competition ranks: 1 = best (highest F1), tied entries share the best rank of their block ("1224").
- 95% intervals are the 2.5th and 97.5th percentiles (numpy's linear interpolation).
Callers leave baselines out of `counts`: they are not ranked.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from worker.evaluation.bootstrap import competition_ranks
from worker.evaluation.formulas import f1_score
from worker.evaluation.types import Rules

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
Seed = int | tuple[int, ...]


def json_ready(value: Any) -> Any:
    """Arrays and numpy scalars as lists and Python numbers; NaN as None."""
    if isinstance(value, np.ndarray):
        return [json_ready(v) for v in value.tolist()] if value.ndim else json_ready(value.item())
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    if isinstance(value, np.generic):
        return json_ready(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _interval(values: FloatArray, axis: int = 0) -> FloatArray:
    """2.5th and 97.5th percentiles along `axis`, stacked on a last axis of 2."""
    return np.moveaxis(np.percentile(values, [2.5, 97.5], axis=axis), 0, -1)


# --- resampling ------------------------------------------------------------------------------------------------


def resample_indices(
    n_cases: int, resamples: int, rng: np.random.Generator, stratify: npt.ArrayLike | None = None
) -> IntArray:
    """(resamples, n_cases) indices of drawn cases. Column c of a row holds a case of c's group (all cases
    without `stratify`), so each group keeps its case count in every resample."""
    labels = np.zeros(n_cases, dtype=np.int64) if stratify is None else np.asarray(stratify)
    if labels.shape != (n_cases,):
        raise ValueError(f"stratify needs one group label per case ({n_cases}), got shape {labels.shape}")
    _, group = np.unique(labels, return_inverse=True)
    draws = np.empty((resamples, n_cases), dtype=np.int64)
    for g in range(int(group.max()) + 1 if n_cases else 0):
        members = np.flatnonzero(group == g)
        draws[:, members] = members[rng.integers(0, len(members), size=(resamples, len(members)))]
    return draws


def weights_of(draws: IntArray, n_cases: int) -> FloatArray:
    """(resamples, n_cases) matrix: how often each case was drawn in each row of `draws`."""
    resamples = len(draws)
    flat = (draws + np.arange(resamples)[:, None] * n_cases).ravel()
    return np.bincount(flat, minlength=resamples * n_cases).reshape(resamples, n_cases).astype(np.float64)


def resampled_f1(counts: IntArray, weights: FloatArray, rules: Rules) -> FloatArray:
    """(resamples, n_entries) pooled F1 of each entry on each resample; counts (n_entries, n_cases, 3)."""
    n_entries, n_cases, _ = counts.shape
    flat = counts.transpose(1, 0, 2).reshape(n_cases, n_entries * 3).astype(np.float64)
    sums = (weights @ flat).reshape(len(weights), n_entries, 3)
    return f1_score(sums[..., 0], sums[..., 1], sums[..., 2], rules)


def _check_counts(counts: npt.ArrayLike, resamples: int) -> IntArray:
    array = np.asarray(counts, dtype=np.int64)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"counts must be (n_entries, n_cases, 3) [TP, FP, FN], got shape {array.shape}")
    if array.shape[1] == 0:
        raise ValueError("counts hold no case")
    if resamples <= 0:
        raise ValueError(f"resamples must be positive, got {resamples}")
    return array


# --- Kendall's tau-b and Holm ----------------------------------------------------------------------------------


def kendall_tau_b_many(a: npt.ArrayLike, b: npt.ArrayLike) -> FloatArray:
    """Kendall's tau-b along the last axis (leading axes broadcast): sum over pairs of sign(a_i - a_j) *
    sign(b_i - b_j), divided by sqrt(untied pairs of a * untied pairs of b); NaN where either is all tied or
    shorter than 2, as scipy.stats.kendalltau. O(n^2) memory per ranking: meant for tens to hundreds of items."""
    x, y = np.broadcast_arrays(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))
    sx = np.sign(x[..., :, None] - x[..., None, :]).astype(np.int8)
    sy = np.sign(y[..., :, None] - y[..., None, :]).astype(np.int8)
    both = np.einsum("...ij,...ij->...", sx, sy, dtype=np.int64)
    untied = np.einsum("...ij,...ij->...", sx, sx, dtype=np.int64) * np.einsum(
        "...ij,...ij->...", sy, sy, dtype=np.int64
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        tau: FloatArray = np.where(untied > 0, both / np.sqrt(untied.astype(np.float64)), np.nan)
    return tau


def kendall_tau_b(a: npt.ArrayLike, b: npt.ArrayLike) -> float:
    """Kendall's tau-b of two equally long 1-D sequences (ties handled); NaN if either is constant."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"kendall_tau_b takes two 1-D sequences of one length, got {x.shape} and {y.shape}")
    return float(kendall_tau_b_many(x, y))


def holm(pvalues: npt.ArrayLike) -> FloatArray:
    """Holm-Bonferroni adjusted p-values, same shape: the k-th smallest of m becomes the running maximum of
    (m - k + 1) * p over the first k, capped at 1 (statsmodels' multipletests(method="holm")). Reject at level
    alpha where the adjusted value is <= alpha."""
    p = np.asarray(pvalues, dtype=np.float64)
    flat = p.ravel()
    order = np.argsort(flat, kind="stable")
    m = flat.size
    stepped = np.maximum.accumulate(flat[order] * np.arange(m, 0, -1))
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(stepped, 1.0)
    return adjusted.reshape(p.shape)


# --- 1. bootstrap ranks ----------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class RankBootstrap:
    """Ranks of every entry over the resamples. frequencies[e, r - 1]: resamples in which entry e had rank r."""

    ranks: IntArray  # (n_entries,) on all cases
    frequencies: IntArray  # (n_entries, n_entries), each row sums to resamples
    median_rank: FloatArray  # (n_entries,)
    rank_ci95: FloatArray  # (n_entries, 2)
    tau: FloatArray  # (resamples,) Kendall's tau-b of the full ranking and each resampled ranking
    tau_median: float  # median over finite taus; NaN when none is

    def to_dict(self) -> dict[str, Any]:
        return {
            "ranks": json_ready(self.ranks),
            "frequencies": json_ready(self.frequencies),
            "median_rank": json_ready(self.median_rank),
            "rank_ci95": json_ready(self.rank_ci95),
            "tau": json_ready(self.tau),
            "tau_median": json_ready(self.tau_median),
        }


def _nanmedian(values: FloatArray) -> float:
    finite = values[np.isfinite(values)]
    return float(np.median(finite)) if finite.size else math.nan


def bootstrap_ranks(
    counts: npt.ArrayLike,
    resamples: int,
    seed: Seed,
    rules: Rules = Rules.MIDOG2022,
    stratify: npt.ArrayLike | None = None,
) -> RankBootstrap:
    """Competition ranks by pooled F1 of (n_entries, n_cases, 3) counts on all cases and on each paired
    resample; per entry the rank frequencies, median rank and 95% rank interval; Kendall's tau-b of the full
    ranking against each resampled one (NaN where either ranking is all tied)."""
    array = _check_counts(counts, resamples)
    n_entries, n_cases, _ = array.shape
    full = array.sum(axis=1)
    ranks = competition_ranks(f1_score(full[:, 0], full[:, 1], full[:, 2], rules))
    draws = resample_indices(n_cases, resamples, np.random.default_rng(seed), stratify)
    boot = competition_ranks(resampled_f1(array, weights_of(draws, n_cases), rules))  # (resamples, n_entries)
    cells = np.arange(n_entries)[None, :] * n_entries + boot - 1
    frequencies = np.bincount(cells.ravel(), minlength=n_entries * n_entries).reshape(n_entries, n_entries)
    tau = kendall_tau_b_many(ranks, boot)
    return RankBootstrap(
        ranks=ranks,
        frequencies=frequencies.astype(np.int64),
        median_rank=np.median(boot, axis=0),
        rank_ci95=_interval(boot.astype(np.float64)),
        tau=tau,
        tau_median=_nanmedian(tau),
    )


# --- 2. pairwise significance ----------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class PairwiseSignificance:
    """Row i, column j: "entry i is better than entry j". Diagonal: NaN p-values, never better."""

    pvalues: FloatArray  # (n_entries, n_entries) one-sided paired-bootstrap p-values
    adjusted: FloatArray  # Holm over all n_entries * (n_entries - 1) ordered pairs
    better: BoolArray  # adjusted <= alpha
    alpha: float
    pairs_tested: int
    min_adjusted_p: float  # the smallest adjusted p these resamples allow: min(1, pairs_tested / (resamples + 1))

    def to_dict(self) -> dict[str, Any]:
        return {
            "pvalues": json_ready(self.pvalues),
            "adjusted": json_ready(self.adjusted),
            "better": json_ready(self.better),
            "alpha": self.alpha,
            "pairs_tested": self.pairs_tested,
            "min_adjusted_p": self.min_adjusted_p,
        }


def pairwise_significance(
    counts: npt.ArrayLike,
    resamples: int,
    seed: Seed,
    rules: Rules = Rules.MIDOG2022,
    alpha: float = 0.05,
    stratify: npt.ArrayLike | None = None,
) -> PairwiseSignificance:
    """Paired bootstrap test of every ordered pair: d_b = F1_i(b) - F1_j(b) on the same resample b, one-sided
    p = (1 + #{d_b <= 0}) / (resamples + 1) for "i better than j", Holm over all ordered pairs. With n entries,
    nothing can be significant unless resamples + 1 >= n (n - 1) / alpha (see min_adjusted_p)."""
    array = _check_counts(counts, resamples)
    n_entries, n_cases, _ = array.shape
    draws = resample_indices(n_cases, resamples, np.random.default_rng(seed), stratify)
    f1 = resampled_f1(array, weights_of(draws, n_cases), rules)
    not_better = (f1[:, :, None] - f1[:, None, :] <= 0).sum(axis=0)
    pvalues = (1.0 + not_better) / (resamples + 1.0)
    off = ~np.eye(n_entries, dtype=bool)
    pvalues[~off] = np.nan
    adjusted = np.full_like(pvalues, np.nan)
    adjusted[off] = holm(pvalues[off])
    pairs = n_entries * (n_entries - 1)
    return PairwiseSignificance(
        pvalues=pvalues,
        adjusted=adjusted,
        better=off & (np.nan_to_num(adjusted, nan=1.0) <= alpha),
        alpha=alpha,
        pairs_tested=pairs,
        min_adjusted_p=min(1.0, pairs / (resamples + 1.0)),
    )


# --- 3. aggregate-then-rank versus rank-then-aggregate ---------------------------------------------------------


@dataclass(frozen=True, eq=False)
class RankingComparison:
    """Pooled-F1 ranking (aggregate, then rank) beside the mean-of-group-ranks ranking (rank, then aggregate)."""

    pooled_f1: FloatArray  # (n_entries,)
    aggregate_ranks: IntArray  # (n_entries,) competition ranks by pooled F1
    group_ranks: IntArray  # (n_entries, n_groups) competition ranks by each group's F1
    mean_group_rank: FloatArray  # (n_entries,)
    rank_then_aggregate_ranks: IntArray  # (n_entries,) competition ranks by mean group rank (lower is better)
    tau: float  # Kendall's tau-b of the two rankings

    def to_dict(self) -> dict[str, Any]:
        return {
            "pooled_f1": json_ready(self.pooled_f1),
            "aggregate_ranks": json_ready(self.aggregate_ranks),
            "group_ranks": json_ready(self.group_ranks),
            "mean_group_rank": json_ready(self.mean_group_rank),
            "rank_then_aggregate_ranks": json_ready(self.rank_then_aggregate_ranks),
            "tau": json_ready(self.tau),
        }


def aggregate_then_rank_vs_rank_then_aggregate(
    group_counts: npt.ArrayLike, rules: Rules = Rules.MIDOG2022
) -> RankingComparison:
    """group_counts (n_entries, n_groups, 3): pooled F1 over all groups ranked, beside each group ranked by its
    own F1, ranks averaged over groups and the averages ranked (ties in the average share the best rank)."""
    array = np.asarray(group_counts, dtype=np.int64)
    if array.ndim != 3 or array.shape[2] != 3 or array.shape[1] == 0:
        raise ValueError(f"group_counts must be (n_entries, n_groups >= 1, 3), got shape {array.shape}")
    full = array.sum(axis=1)
    pooled = f1_score(full[:, 0], full[:, 1], full[:, 2], rules)
    aggregate = competition_ranks(pooled)
    group_ranks = competition_ranks(f1_score(array[..., 0], array[..., 1], array[..., 2], rules).T).T
    rank_sums = group_ranks.sum(axis=1)  # integer sums: ties in the mean are exact
    by_mean = competition_ranks(-rank_sums.astype(np.float64))
    return RankingComparison(
        pooled_f1=pooled,
        aggregate_ranks=aggregate,
        group_ranks=group_ranks,
        mean_group_rank=rank_sums / array.shape[1],
        rank_then_aggregate_ranks=by_mean,
        tau=kendall_tau_b(aggregate, by_mean),
    )


# --- 4. seen and unseen groups ---------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class SeenUnseenGap:
    """Pooled F1 of one entry on the seen groups' cases and on the unseen groups' cases; None for a side with no
    case (and then no gap)."""

    seen_f1: float | None
    unseen_f1: float | None
    gap: float | None  # seen_f1 - unseen_f1
    seen_ci95: tuple[float, float] | None
    unseen_ci95: tuple[float, float] | None
    gap_ci95: tuple[float, float] | None
    seen_cases: int
    unseen_cases: int

    def to_dict(self) -> dict[str, Any]:
        return {key: json_ready(getattr(self, key)) for key in self.__dataclass_fields__}


def _pair(values: FloatArray) -> tuple[float, float]:
    low, high = _interval(values)
    return float(low), float(high)


def seen_unseen_gap(
    counts: npt.ArrayLike,
    groups: Sequence[Hashable],
    seen: Collection[Hashable],
    resamples: int,
    seed: Seed,
    rules: Rules = Rules.MIDOG2022,
) -> SeenUnseenGap:
    """counts (n_cases, 3) of one entry, a group label per case, the labels of the groups seen in training.
    Cases are resampled within their group (so each side keeps its case count); the seen F1, unseen F1 and gap
    are recomputed from each resample's summed counts. The same seed and groups give every entry the same draws,
    and the draws of `bootstrap_ranks(..., stratify=groups)`."""
    array = np.asarray(counts, dtype=np.int64)
    if array.ndim != 2 or array.shape[1] != 3 or len(groups) != len(array):
        raise ValueError(f"counts must be (n_cases, 3) with one group per case, got {array.shape}, {len(groups)}")
    if resamples <= 0:
        raise ValueError(f"resamples must be positive, got {resamples}")
    is_seen = np.array([g in seen for g in groups], dtype=bool)
    labels = np.asarray(groups)
    weights = weights_of(resample_indices(len(array), resamples, np.random.default_rng(seed), labels), len(array))
    points: list[float | None] = []
    boots: list[FloatArray | None] = []
    for side in (is_seen, ~is_seen):
        if not side.any():
            points.append(None)
            boots.append(None)
            continue
        total = array[side].sum(axis=0)
        points.append(float(f1_score(total[0], total[1], total[2], rules)))
        sums = weights[:, side] @ array[side].astype(np.float64)
        boots.append(f1_score(sums[:, 0], sums[:, 1], sums[:, 2], rules))
    seen_boot, unseen_boot = boots
    return SeenUnseenGap(
        seen_f1=points[0],
        unseen_f1=points[1],
        gap=points[0] - points[1] if points[0] is not None and points[1] is not None else None,
        seen_ci95=_pair(seen_boot) if seen_boot is not None else None,
        unseen_ci95=_pair(unseen_boot) if unseen_boot is not None else None,
        gap_ci95=_pair(seen_boot - unseen_boot) if seen_boot is not None and unseen_boot is not None else None,
        seen_cases=int(is_seen.sum()),
        unseen_cases=int((~is_seen).sum()),
    )
