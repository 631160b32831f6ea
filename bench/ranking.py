"""Ranking-analysis benchmark: 1,000 stratified resamples for 20 entries x 100 cases in 4 groups, on one core.

Timed together (worker/evaluation/ranking.py): bootstrap ranks with Kendall's tau-b of every resample, the
pairwise significance of all 380 ordered pairs, and the seen/unseen gap of every entry (groups 0-2 seen, group
3 unseen). Target: under 2 s. Baseline, measured in the same run: the same bootstrap ranks and taus by a plain
loop over resamples (sum the drawn cases' counts, F1, scipy.stats.rankdata(method="min"), scipy.stats.kendalltau
per resample) on the same draws; its ranks and taus are checked equal to the vectorised ones. Also timed, outside
the target: the pairwise test alone at 7,600 resamples, the fewest at which Holm over 380 ordered pairs can
reject anything at 5% (380 / (B + 1) <= 0.05), and the server's whole analysis of such a board
(app/leaderboard/analysis.py, as a board rebuild runs it: the above, the pairwise test at the resamples its
rule gives for 20 entries, the heat map with intervals and the per-group ranking).
Run: `.venv/bin/python bench/ranking.py` (prints a table; not a test).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # one core; must precede the numpy import

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy.stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from worker.evaluation.formulas import f1_score
from worker.evaluation.ranking import (
    PairwiseSignificance,
    RankBootstrap,
    SeenUnseenGap,
    aggregate_then_rank_vs_rank_then_aggregate,
    bootstrap_ranks,
    pairwise_significance,
    resample_indices,
    seen_unseen_gap,
)

ENTRIES, CASES, GROUPS, RESAMPLES, SEED = 20, 100, 4, 1000, 0
SEEN = {0, 1, 2}
NEEDED = 7600  # the fewest resamples with 380 / (B + 1) <= 0.05: Holm can reject only from there on


def synthetic_counts(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(entries, cases, 3) counts: about 30 figures a case, recall 0.55-0.85 and precision 0.6-0.85 per entry,
    recall a further 0-40% lower on the unseen group 3."""
    rng = np.random.default_rng(seed)
    groups = np.arange(CASES) % GROUPS
    figures = rng.poisson(30, CASES)
    recall = rng.uniform(0.55, 0.85, ENTRIES)[:, None] * np.where(
        groups == 3, rng.uniform(0.6, 1.0, ENTRIES)[:, None], 1
    )
    precision = rng.uniform(0.6, 0.85, ENTRIES)[:, None]
    tp = rng.binomial(figures[None, :], recall)
    fp = rng.poisson(tp * (1 - precision) / precision)
    return np.stack([tp, fp, figures[None, :] - tp], axis=-1).astype(np.int64), groups


def analysis(counts: np.ndarray, groups: np.ndarray) -> tuple[RankBootstrap, PairwiseSignificance, list[SeenUnseenGap]]:
    ranks = bootstrap_ranks(counts, RESAMPLES, SEED, stratify=groups)
    pairs = pairwise_significance(counts, RESAMPLES, SEED, stratify=groups)
    labels = groups.tolist()
    gaps = [seen_unseen_gap(entry, labels, SEEN, RESAMPLES, SEED) for entry in counts]
    return ranks, pairs, gaps


def loop_ranks(counts: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The straightforward way: one resample at a time, scipy's rankdata and kendalltau."""
    full = counts.sum(axis=1)
    base = scipy.stats.rankdata(-f1_score(full[:, 0], full[:, 1], full[:, 2]), method="min")
    draws = resample_indices(CASES, RESAMPLES, np.random.default_rng(SEED), groups)
    ranks = np.empty((RESAMPLES, ENTRIES), dtype=np.int64)
    taus = np.empty(RESAMPLES)
    for b in range(RESAMPLES):
        sums = counts[:, draws[b]].sum(axis=1)
        ranks[b] = scipy.stats.rankdata(-f1_score(sums[:, 0], sums[:, 1], sums[:, 2]), method="min")
        taus[b] = scipy.stats.kendalltau(base, ranks[b]).statistic
    return ranks, taus


def gap_text(gap: SeenUnseenGap) -> str:
    low, high = gap.gap_ci95 or (float("nan"), float("nan"))
    return f"{gap.gap:.3f} [{low:.3f}, {high:.3f}] (seen {gap.seen_f1:.3f}, unseen {gap.unseen_f1:.3f})"


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    counts, groups = synthetic_counts()
    ranks, pairs, gaps = analysis(counts, groups)
    only_ranks = median_seconds(lambda: bootstrap_ranks(counts, RESAMPLES, SEED, stratify=groups), 7)
    everything = median_seconds(lambda: analysis(counts, groups), 7)
    loop = median_seconds(lambda: loop_ranks(counts, groups), 3)

    enough = pairwise_significance(counts, NEEDED, SEED, stratify=groups)
    needed_time = median_seconds(lambda: pairwise_significance(counts, NEEDED, SEED, stratify=groups), 3)

    from app.leaderboard.analysis import AnalysisEntry, build_analysis, significance_resamples

    names = [f"{i:03d}" for i in range(CASES)]
    board = [
        AnalysisEntry(
            e,
            f"team {e}",
            "",
            e + 1,
            False,
            {n: dict(zip(("tp", "fp", "fn"), map(int, counts[e, i]), strict=True)) for i, n in enumerate(names)},
        )
        for e in range(ENTRIES)
    ]
    case_groups = {n: str(g) for n, g in zip(names, groups.tolist(), strict=True)}
    server = median_seconds(
        lambda: build_analysis(
            board, case_groups, seen_groups=["0", "1", "2"], rules="midog2022", resamples=RESAMPLES, seed=SEED
        ),
        3,
    )

    loop_r, loop_tau = loop_ranks(counts, groups)
    frequencies = np.stack([np.bincount(loop_r[:, e] - 1, minlength=ENTRIES) for e in range(ENTRIES)])
    same = np.array_equal(frequencies, ranks.frequencies) and np.allclose(loop_tau, ranks.tau, rtol=0, atol=1e-12)
    assert same, "the loop and the vectorised bootstrap disagree"

    top = int(np.argmin(ranks.ranks))
    by_gap = sorted(gaps, key=lambda g: g.gap or 0.0)
    comparison = aggregate_then_rank_vs_rank_then_aggregate(
        np.stack([counts[:, groups == g].sum(axis=1) for g in range(GROUPS)], axis=1)
    )
    rows = [
        ("set", f"{ENTRIES} entries x {CASES} cases, {GROUPS} groups of {CASES // GROUPS}, {RESAMPLES} resamples"),
        ("bootstrap ranks + taus + pairwise + 20 gaps", f"{everything * 1000:.1f} ms (median of 7; target < 2000 ms)"),
        ("  of which bootstrap ranks + taus", f"{only_ranks * 1000:.1f} ms"),
        ("baseline: per-resample loop, ranks + taus", f"{loop * 1000:.1f} ms (median of 3)"),
        ("ratio baseline / vectorised ranks + taus", f"{loop / only_ranks:.0f}x"),
        ("loop and vectorised identical (ranks, taus)", "yes" if same else "no"),
        ("median Kendall tau-b, full vs resample", f"{ranks.tau_median:.3f}"),
        (
            f"top entry ({top}): median rank, 95% interval",
            f"{ranks.median_rank[top]:.1f}, [{ranks.rank_ci95[top][0]:.1f}, {ranks.rank_ci95[top][1]:.1f}]",
        ),
        (
            "significant ordered pairs (Holm, 5%)",
            f"{int(pairs.better.sum())} of {pairs.pairs_tested}; smallest attainable adjusted p "
            f"{pairs.min_adjusted_p:.3f}",
        ),
        (
            f"pairwise alone at {NEEDED} resamples",
            f"{needed_time * 1000:.1f} ms, {int(enough.better.sum())} significant ordered pairs",
        ),
        (
            f"server analysis of the board (pairwise at {significance_resamples(ENTRIES, RESAMPLES)} resamples)",
            f"{server * 1000:.1f} ms (median of 3)",
        ),
        ("pairs with raw p <= 0.05", f"{int((np.nan_to_num(pairs.pvalues, nan=1) <= 0.05).sum())}"),
        ("seen - unseen F1 gap, smallest", gap_text(by_gap[0])),
        ("seen - unseen F1 gap, largest", gap_text(by_gap[-1])),
        ("tau, pooled ranking vs mean group rank", f"{comparison.tau:.3f}"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()
