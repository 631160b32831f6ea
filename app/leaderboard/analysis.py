"""The ranking analysis of a phase's board, built with its standings (app.leaderboard.standings) and stored in
the snapshot beside the entries: how certain the order is, which differences are significant, whether ranking
per scanner would change the order, F1 per entry and scanner with intervals, and seen versus unseen scanners.

Rules:
- Groups the phase does not show (`shown_groups`) never appear one by one: the heat map and the per-group
  ranking cover the shown groups; every case still counts in the pooled F1, the ranks and the gap.
- Only ranked entries (no baseline) of a detection phase ranked by F1 enter the rank statistics, the best
  `max_entries` of them by rank; every entry (baselines too) gets the heat-map row and the seen/unseen gap.
- Every statistic resamples the same cases with one seed, stratified by group: each group keeps its case count
  in every resample, and F1 is recomputed from the summed counts (pooled), never averaged over cases.
- The significance test gets enough resamples that the smallest Holm-adjusted p-value it can give lies at or
  below alpha / 4 (`significance_resamples`), between `resamples` and 10,000.
Must not import FastAPI; numpy and the scoring core's ranking module only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from worker.evaluation.formulas import f1_score
from worker.evaluation.ranking import (
    SeenUnseenGap,
    aggregate_then_rank_vs_rank_then_aggregate,
    bootstrap_ranks,
    json_ready,
    pairwise_significance,
    resample_indices,
    weights_of,
)
from worker.evaluation.types import Rules

ALPHA = 0.05
MAX_SIGNIFICANCE_RESAMPLES = 10_000


@dataclass(frozen=True)
class AnalysisEntry:
    """One board entry as the analysis sees it: its per-case [TP, FP, FN] and who it is."""

    submission_id: int
    team_name: str
    method_name: str
    rank: int | None  # None for baselines
    is_baseline: bool
    cases: Mapping[str, Mapping[str, int]]  # case name -> {"tp", "fp", "fn"}


def significance_resamples(entries: int, resamples: int, alpha: float = ALPHA) -> int:
    """Resamples for the pairwise test: Holm over n (n - 1) ordered pairs needs (resamples + 1) >= 4 n (n - 1) /
    alpha for its smallest adjusted p to reach alpha / 4; never fewer than `resamples`, at most 10,000."""
    needed = math.ceil(4 * entries * (entries - 1) / alpha)
    return max(resamples, min(MAX_SIGNIFICANCE_RESAMPLES, needed))


def unavailable(reason: str) -> dict[str, Any]:
    return {"available": False, "reason": reason}


def build_analysis(
    entries: Sequence[AnalysisEntry],
    case_groups: Mapping[str, str],
    *,
    seen_groups: Sequence[str] | None,
    rules: str,
    resamples: int,
    seed: int,
    shown_groups: Sequence[str] | None = None,
    max_entries: int = 50,
) -> dict[str, Any]:
    """The analysis document served as /api/v1/phases/<id>/analysis (see the module's rules)."""
    names = sorted(case_groups)
    if not names:
        return unavailable("the phase's test set has no case")
    usable = [e for e in entries if set(e.cases) >= set(names)]
    if not usable:
        return unavailable("no entry has per-case results on every case of the test set")
    labels = np.array([case_groups[n] for n in names])
    # groups the phase hides never appear one by one (they still count in the pooled F1 and the gap)
    groups = [g for g in sorted(set(labels.tolist())) if shown_groups is None or g in shown_groups]
    counts = np.array([[[e.cases[n].get(k, 0) for k in ("tp", "fp", "fn")] for n in names] for e in usable])
    rule = Rules(rules)
    # one set of stratified draws for the heat map and the gaps (the draws every ranking function makes from
    # this seed and these labels)
    weights = weights_of(resample_indices(len(names), resamples, np.random.default_rng(seed), labels), len(names))
    doc: dict[str, Any] = {
        "available": True,
        "metric": "f1",
        "rules": rules,
        "resamples": resamples,
        "seed": seed,
        "alpha": ALPHA,
        "groups": groups,
        "seen_groups": [g for g in groups if seen_groups and g in seen_groups],
        "cases_per_group": {g: int((labels == g).sum()) for g in groups},
        "entries": [_entry_head(e) for e in usable],
        "heatmap": _heatmap(counts, labels, groups, weights, rule),
        "generalisation": _generalisation(counts, labels, seen_groups, weights, rule),
    }
    ranked = sorted((i for i, e in enumerate(usable) if e.rank is not None), key=lambda i: (usable[i].rank, i))
    ranked = ranked[:max_entries]
    doc["ranked"] = ranked  # indices into "entries", best first
    doc["ranked_total"] = sum(1 for e in usable if e.rank is not None)
    if len(ranked) < 2:
        doc["ranking"] = unavailable("fewer than two ranked entries")
        return doc
    ranked_counts = counts[ranked]
    boot = bootstrap_ranks(ranked_counts, resamples, seed, rule, stratify=labels)
    sig_resamples = significance_resamples(len(ranked), resamples)
    significance = pairwise_significance(ranked_counts, sig_resamples, seed, rule, ALPHA, stratify=labels)
    if not groups:
        doc["ranking"] = unavailable("the phase shows no group")
        return doc
    by_group = np.stack([ranked_counts[:, labels == g].sum(axis=1) for g in groups], axis=1)
    comparison = aggregate_then_rank_vs_rank_then_aggregate(by_group, rule)
    tau = boot.tau[np.isfinite(boot.tau)]
    doc["ranking"] = {
        "available": True,
        "ranks": json_ready(boot.ranks),
        "frequencies": json_ready(boot.frequencies),
        "median_rank": json_ready(boot.median_rank),
        "rank_ci95": json_ready(boot.rank_ci95),
        "tau_median": json_ready(boot.tau_median),
        "tau_ci95": json_ready(np.percentile(tau, [2.5, 97.5])) if tau.size else None,
    }
    doc["significance"] = {**significance.to_dict(), "resamples": sig_resamples}
    doc["rank_then_aggregate"] = comparison.to_dict()
    return doc


def _entry_head(e: AnalysisEntry) -> dict[str, Any]:
    return {
        "submission_id": e.submission_id,
        "team_name": e.team_name,
        "method_name": e.method_name,
        "rank": e.rank,
        "is_baseline": e.is_baseline,
    }


def _heatmap(
    counts: np.ndarray, labels: np.ndarray, groups: list[str], weights: np.ndarray, rules: Rules
) -> dict[str, Any]:
    """F1 of every entry on every group with its 95% interval (cases resampled within the group)."""
    f1 = np.empty((len(counts), len(groups)))
    ci = np.empty((len(counts), len(groups), 2))
    for j, g in enumerate(groups):
        point, boot = _side_f1(counts, labels == g, weights, rules)
        f1[:, j] = point
        ci[:, j] = np.percentile(boot, [2.5, 97.5], axis=0).T
    return {"f1": json_ready(f1), "ci95": json_ready(ci)}


def _side_f1(
    counts: np.ndarray, members: np.ndarray, weights: np.ndarray, rules: Rules
) -> tuple[np.ndarray, np.ndarray]:
    """Pooled F1 of every entry over the `members` cases, (entries,), and on every resample, (resamples,
    entries). The weighted sums are sums of integers, exact in float64 whatever the order of summation."""
    total = counts[:, members].sum(axis=1)
    sums = np.einsum("rc,eck->rek", weights[:, members], counts[:, members].astype(np.float64))
    return f1_score(total[:, 0], total[:, 1], total[:, 2], rules), f1_score(
        sums[..., 0], sums[..., 1], sums[..., 2], rules
    )


def _generalisation(
    counts: np.ndarray, labels: np.ndarray, seen_groups: Sequence[str] | None, weights: np.ndarray, rules: Rules
) -> list[dict[str, Any]] | None:
    """Per entry: pooled F1 on the seen groups, on the unseen ones, and the gap, each with its 95% interval;
    all entries at once, and equal to worker.evaluation.ranking.seen_unseen_gap entry by entry."""
    if not seen_groups:
        return None
    is_seen = np.isin(labels, list(seen_groups))
    sides = [_side_f1(counts, side, weights, rules) if side.any() else None for side in (is_seen, ~is_seen)]

    def interval(values: np.ndarray) -> tuple[float, float]:
        low, high = np.percentile(values, [2.5, 97.5])
        return float(low), float(high)

    rows = []
    for e in range(len(counts)):
        seen, unseen = ((float(side[0][e]), side[1][:, e]) if side is not None else None for side in sides)
        gap = SeenUnseenGap(
            seen_f1=seen[0] if seen else None,
            unseen_f1=unseen[0] if unseen else None,
            gap=seen[0] - unseen[0] if seen and unseen else None,
            seen_ci95=interval(seen[1]) if seen else None,
            unseen_ci95=interval(unseen[1]) if unseen else None,
            gap_ci95=interval(seen[1] - unseen[1]) if seen and unseen else None,
            seen_cases=int(is_seen.sum()),
            unseen_cases=int((~is_seen).sum()),
        )
        rows.append(gap.to_dict())
    return rows
