"""Ranking analysis (worker/evaluation/ranking.py): hand-computed cases, scipy's Kendall tau, Holm, invariants.

Hand cases use the midog2021 rules (F1 = 2TP / (2TP + FP + FN), no eps) so that the fractions are exact. Where a
hand case depends on which cases a resample drew, the test redraws them with the documented convention
(numpy.random.default_rng(seed), groups in sorted label order, rng.integers(0, n_g, size=(resamples, n_g)) per
group) and counts the patterns itself.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.stats

from worker.evaluation.bootstrap import resample_weights
from worker.evaluation.ranking import (
    aggregate_then_rank_vs_rank_then_aggregate,
    bootstrap_ranks,
    holm,
    kendall_tau_b,
    kendall_tau_b_many,
    pairwise_significance,
    resample_indices,
    seen_unseen_gap,
    weights_of,
)
from worker.evaluation.types import Rules

R21 = Rules.MIDOG2021

# Two cases, three entries. Per resample only the pattern of drawn cases matters:
#   "11" = case 1 twice, "22" = case 2 twice, "12" = each once (the full data).
# A: case 1 [3, 1, 0], case 2 [0, 0, 2]; B: [1, 0, 2], [1, 0, 0]; C: [1, 1, 1] on both.
#   "11": A [6, 2, 0] -> 12/14 = 0.857; B [2, 0, 4] -> 4/8 = 0.5;  C [2, 2, 2] -> 4/8 = 0.5 => ranks A1 B2 C2
#   "22": A [0, 0, 4] -> 0/4 = 0;       B [2, 0, 0] -> 4/4 = 1;    C 0.5                  => ranks A3 B1 C2
#   "12": A [3, 1, 2] -> 6/9 = 2/3;     B [2, 0, 2] -> 4/6 = 2/3;  C 0.5                  => ranks A1 B1 C3
TWO_CASES = np.array(
    [
        [[3, 1, 0], [0, 0, 2]],
        [[1, 0, 2], [1, 0, 0]],
        [[1, 1, 1], [1, 1, 1]],
    ]
)
RANKS_OF = {"11": [1, 2, 2], "22": [3, 1, 2], "12": [1, 1, 3]}
# Kendall's tau-b of the full ranking [1, 1, 3] against each (pairs AB, AC, BC; sign products; untied pairs):
#   "11" [1, 2, 2]: 0, (-1)(-1) = 1, (-1)(0) = 0 -> 1 / sqrt(2 * 2) = 0.5
#   "22" [3, 1, 2]: 0, (-1)(+1) = -1, (-1)(-1) = 1 -> 0 / sqrt(2 * 3) = 0
#   "12" [1, 1, 3]: 0, 1, 1 -> 2 / sqrt(2 * 2) = 1
TAU_OF = {"11": 0.5, "22": 0.0, "12": 1.0}


def patterns(resamples: int, seed: int) -> list[str]:
    draws = np.random.default_rng(seed).integers(0, 2, size=(resamples, 2))
    return ["11" if (d == 0).all() else "22" if (d == 1).all() else "12" for d in draws]


def random_counts(n_entries: int, n_cases: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 8, size=(n_entries, n_cases, 3))


def assert_json_safe(result: object) -> None:
    json.dumps(result.to_dict(), allow_nan=False)  # type: ignore[attr-defined]


# --- Kendall's tau-b ---------------------------------------------------------------------------------------------


def test_kendall_tau_b_hand_cases() -> None:
    # [1, 2, 3] vs [1, 3, 2]: pairs (12) +1, (13) +1, (23) -1 -> 1/3
    assert kendall_tau_b([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)
    # [1, 1, 2] vs [1, 2, 2]: (12) 0 (tie in a), (13) +1, (23) 0 (tie in b); untied 2 and 2 -> 1 / sqrt(4) = 0.5
    assert kendall_tau_b([1, 1, 2], [1, 2, 2]) == pytest.approx(0.5)
    assert kendall_tau_b([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert np.isnan(kendall_tau_b([2, 2, 2], [1, 2, 3]))  # a constant ranking has no tau, as in scipy
    assert np.isnan(kendall_tau_b([1], [1]))


def test_kendall_tau_b_equals_scipy_with_ties() -> None:
    rng = np.random.default_rng(3)
    compared = 0
    for _ in range(300):
        n = int(rng.integers(2, 15))
        a, b = rng.integers(0, 4, n), rng.integers(0, 4, n)  # many ties
        ours, theirs = kendall_tau_b(a, b), scipy.stats.kendalltau(a, b).statistic
        if np.isnan(theirs):
            assert np.isnan(ours), (a, b)
        else:
            assert ours == pytest.approx(theirs, rel=1e-12, abs=1e-12), (a, b)
            compared += 1
    assert compared > 250


def test_kendall_tau_b_many_equals_scipy_row_by_row() -> None:
    rng = np.random.default_rng(4)
    base = rng.integers(1, 8, 12)
    many = rng.integers(1, 8, (50, 12))
    taus = kendall_tau_b_many(base, many)
    assert taus.shape == (50,)
    np.testing.assert_allclose(taus, [scipy.stats.kendalltau(base, row).statistic for row in many], rtol=1e-12)


def test_kendall_tau_b_refuses_unequal_lengths() -> None:
    with pytest.raises(ValueError, match="1-D"):
        kendall_tau_b([1, 2, 3], [1, 2])


# --- Holm ------------------------------------------------------------------------------------------------------


def holm_by_loop(p: list[float], alpha: float) -> tuple[list[float], list[bool]]:
    """statsmodels' multipletests(method="holm") written out: sort, multiply the k-th (0-based) by m - k,
    running maximum, cap at 1; reject the sorted prefix whose p_k <= alpha / (m - k)."""
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    adjusted, reject = [0.0] * m, [False] * m
    running, still = 0.0, True
    for k, i in enumerate(order):
        running = max(running, (m - k) * p[i])
        adjusted[i] = min(1.0, running)
        still = still and p[i] <= alpha / (m - k)
        reject[i] = still
    return adjusted, reject


def test_holm_hand_cases() -> None:
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04; running max 0.02, 0.03, 0.06, 0.06
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    # 0.3 * 2 = 0.6, 0.5 * 1 = 0.5 -> running max 0.6, 0.6
    np.testing.assert_allclose(holm([0.5, 0.3]), [0.6, 0.6])
    # 0.4 * 3 = 1.2 -> capped at 1, and the running maximum keeps the rest at 1
    np.testing.assert_allclose(holm([0.4, 0.6, 0.9]), [1.0, 1.0, 1.0])
    # ties: 0.01 * 3 = 0.03, 0.01 * 2 = 0.02 -> 0.03, 0.02 * 1 -> 0.03
    np.testing.assert_allclose(holm([0.01, 0.02, 0.01]), [0.03, 0.03, 0.03])
    # shape kept
    assert holm(np.array([[0.01, 0.02], [0.03, 0.04]])).shape == (2, 2)


def test_holm_equals_the_statsmodels_algorithm() -> None:
    rng = np.random.default_rng(5)
    for _ in range(100):
        p = rng.choice([0.001, 0.004, 0.01, 0.02, 0.3], size=int(rng.integers(1, 12))).tolist()
        p += rng.uniform(0, 0.1, int(rng.integers(0, 5))).tolist()
        expected, reject = holm_by_loop(p, 0.05)
        ours = holm(p)
        np.testing.assert_allclose(ours, expected, rtol=1e-12)
        assert (ours <= 0.05).tolist() == reject


# --- resampling ------------------------------------------------------------------------------------------------


def test_unstratified_draws_equal_the_bootstrap_modules() -> None:
    draws = resample_indices(30, 40, np.random.default_rng(9))
    np.testing.assert_array_equal(weights_of(draws, 30), resample_weights(30, 40, np.random.default_rng(9)))


def test_stratified_resampling_keeps_each_groups_case_count() -> None:
    labels = np.array(["b", "a", "b", "c", "a", "b", "b", "c", "a", "b"])
    draws = resample_indices(len(labels), 200, np.random.default_rng(1), labels)
    weights = weights_of(draws, len(labels))
    assert (weights.sum(axis=1) == len(labels)).all()
    for label in "abc":
        members = labels == label
        assert (labels[draws[:, members]] == label).all()  # a group's columns draw only its own cases
        assert (weights[:, members].sum(axis=1) == members.sum()).all()
    assert (weights[:, labels == "b"] != 1).any()  # and it does resample within the group


def test_one_case_per_group_fixes_every_resample() -> None:
    # Each case its own group: every resample is the full data, so every rank is the full rank and tau is 1.
    counts = random_counts(4, 6, seed=2)
    result = bootstrap_ranks(counts, 50, 0, stratify=np.arange(6))
    full = bootstrap_ranks(counts, 1, 0).ranks
    assert len(set(full.tolist())) == 4  # no tie, so tau is defined
    np.testing.assert_array_equal(result.frequencies[np.arange(4), full - 1], [50] * 4)
    np.testing.assert_array_equal(result.tau, np.ones(50))
    unstratified = bootstrap_ranks(counts, 50, 0)
    assert (unstratified.tau < 1).any()


def test_stratify_needs_one_label_per_case() -> None:
    with pytest.raises(ValueError, match="one group label per case"):
        bootstrap_ranks(random_counts(2, 5, 0), 10, 0, stratify=[0, 1])


# --- bootstrap ranks -------------------------------------------------------------------------------------------


def test_bootstrap_ranks_hand_case() -> None:
    resamples, seed = 400, 7
    drawn = patterns(resamples, seed)
    n = {key: drawn.count(key) for key in RANKS_OF}
    assert min(n.values()) > 50  # all three patterns occur
    result = bootstrap_ranks(TWO_CASES, resamples, seed, R21)

    np.testing.assert_array_equal(result.ranks, [1, 1, 3])  # the full data is pattern "12"
    # rank frequencies, columns rank 1, 2, 3
    expected = [
        [n["11"] + n["12"], 0, n["22"]],  # A: 1 on "11" and "12", 3 on "22"
        [n["22"] + n["12"], n["11"], 0],  # B: 1 on "22" and "12", 2 on "11"
        [0, n["11"] + n["22"], n["12"]],  # C: 2 on "11" and "22", 3 on "12"
    ]
    np.testing.assert_array_equal(result.frequencies, expected)
    per_resample = np.array([RANKS_OF[key] for key in drawn], dtype=float)
    np.testing.assert_array_equal(result.median_rank, np.median(per_resample, axis=0))
    np.testing.assert_allclose(result.rank_ci95, np.percentile(per_resample, [2.5, 97.5], axis=0).T)
    np.testing.assert_allclose(result.tau, [TAU_OF[key] for key in drawn], atol=1e-15)
    assert result.tau_median == np.median([TAU_OF[key] for key in drawn])
    assert_json_safe(result)


def test_bootstrap_ranks_invariants_and_dominance() -> None:
    rng = np.random.default_rng(11)
    base = rng.integers(1, 10, size=(60, 3))
    best = np.c_[base[:, 0] + 3, np.zeros(60), np.zeros(60)]  # F1 = 1 on every resample
    worst = np.c_[base[:, 0], base[:, 1] + 3, base[:, 2] + 3]
    counts = np.stack([worst, base, best]).astype(np.int64)
    result = bootstrap_ranks(counts, 300, 0, stratify=np.arange(60) % 4)
    np.testing.assert_array_equal(result.frequencies.sum(axis=1), [300, 300, 300])
    np.testing.assert_array_equal(result.ranks, [3, 2, 1])
    assert result.median_rank[2] == 1
    np.testing.assert_array_equal(result.rank_ci95[2], [1, 1])
    assert result.frequencies[2, 0] == 300


def test_all_tied_full_ranking_gives_nan_taus_and_json_nulls() -> None:
    counts = np.repeat(random_counts(1, 5, 0), 3, axis=0)  # three identical entries: always tied at rank 1
    result = bootstrap_ranks(counts, 20, 0)
    assert np.isnan(result.tau).all()
    assert np.isnan(result.tau_median)
    np.testing.assert_array_equal(result.frequencies[:, 0], [20, 20, 20])
    assert result.to_dict()["tau_median"] is None
    assert_json_safe(result)


def test_bootstrap_ranks_is_seeded() -> None:
    counts = random_counts(6, 30, seed=1)
    first = bootstrap_ranks(counts, 200, 3, stratify=np.arange(30) % 3)
    again = bootstrap_ranks(counts, 200, 3, stratify=np.arange(30) % 3)
    other = bootstrap_ranks(counts, 200, 4, stratify=np.arange(30) % 3)
    np.testing.assert_array_equal(first.frequencies, again.frequencies)
    np.testing.assert_array_equal(first.tau, again.tau)
    assert not np.array_equal(first.tau, other.tau)
    assert not np.array_equal(first.frequencies, other.frequencies)


def test_bootstrap_ranks_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="n_entries, n_cases, 3"):
        bootstrap_ranks(np.zeros((3, 3)), 10, 0)
    with pytest.raises(ValueError, match="resamples"):
        bootstrap_ranks(random_counts(2, 3, 0), 0, 0)


# --- pairwise significance -------------------------------------------------------------------------------------


def test_pairwise_significance_hand_case() -> None:
    # Entries A and B of TWO_CASES; d = F1_A - F1_B per pattern: "11" 0.857 - 0.5 > 0, "22" 0 - 1 < 0, "12" 2/3 -
    # 2/3 = 0 (exactly: 6/9 and 4/6 round to the same double).
    #   p(A better than B) = (1 + #{d <= 0}) / (B + 1) = (1 + n22 + n12) / (B + 1)
    #   p(B better than A) = (1 + #{-d <= 0}) / (B + 1) = (1 + n11 + n12) / (B + 1)
    resamples, seed = 400, 7
    drawn = patterns(resamples, seed)
    n = {key: drawn.count(key) for key in RANKS_OF}
    p_ab = (1 + n["22"] + n["12"]) / (resamples + 1)
    p_ba = (1 + n["11"] + n["12"]) / (resamples + 1)
    result = pairwise_significance(TWO_CASES[:2], resamples, seed, R21)
    assert result.pvalues[0, 1] == pytest.approx(p_ab)
    assert result.pvalues[1, 0] == pytest.approx(p_ba)
    assert np.isnan(result.pvalues[0, 0])
    # Holm over the two ordered pairs: smaller * 2, larger * 1, running maximum
    low, high = sorted([p_ab, p_ba])
    adjusted = {low: min(1, 2 * low), high: min(1, max(2 * low, high))}
    assert result.adjusted[0, 1] == pytest.approx(adjusted[p_ab])
    assert result.adjusted[1, 0] == pytest.approx(adjusted[p_ba])
    assert not result.better.any()
    assert result.pairs_tested == 2
    assert result.min_adjusted_p == pytest.approx(2 / 401)
    assert_json_safe(result)


def test_a_dominating_entry_is_significantly_better_and_twins_never_differ() -> None:
    rng = np.random.default_rng(12)
    base = rng.integers(1, 10, size=(50, 3))
    best = np.c_[base[:, 0] + 3, np.zeros(50), np.zeros(50)]
    worst = np.c_[base[:, 0], base[:, 1] + 3, base[:, 2] + 3]
    counts = np.stack([best, base, base, worst]).astype(np.int64)  # entries 1 and 2 are twins
    for stratify in (None, np.arange(50) % 4):
        result = pairwise_significance(counts, 500, 0, stratify=stratify)
        assert result.better[0, 3]
        assert result.better[0, 1]
        assert not result.better[3, 0]
        assert result.pvalues[1, 2] == 1.0
        assert result.pvalues[2, 1] == 1.0  # d = 0 on every resample counts against "better"
        assert not result.better[1, 2]
        assert not result.better[2, 1]
        assert not result.better.diagonal().any()
        # every cell is the same test read both ways: i better than j excludes j better than i
        assert not (result.better & result.better.T).any()


def test_too_few_resamples_for_many_entries_cannot_be_significant() -> None:
    # 20 entries: 380 ordered pairs; the smallest p is 1 / (B + 1), so Holm's smallest adjusted p is 380 / (B + 1).
    rng = np.random.default_rng(13)
    counts = rng.integers(1, 10, size=(20, 40, 3))
    counts[0] = np.c_[counts[0, :, 0] + 40, np.zeros((40, 2), dtype=int)]  # entry 0 beats all on every case
    few = pairwise_significance(counts, 1000, 0)
    assert few.min_adjusted_p == pytest.approx(380 / 1001)
    assert few.pvalues[0, 1:].max() == pytest.approx(1 / 1001)
    assert not few.better.any()
    many = pairwise_significance(counts, 8000, 0)  # 380 / 8001 = 0.0475 <= 0.05
    assert many.better[0, 1:].all()


def test_pairwise_significance_is_seeded() -> None:
    counts = random_counts(4, 25, seed=6)
    first = pairwise_significance(counts, 300, 1)
    again = pairwise_significance(counts, 300, 1)
    other = pairwise_significance(counts, 300, 2)
    np.testing.assert_array_equal(first.pvalues, again.pvalues)
    assert not np.array_equal(first.pvalues, other.pvalues, equal_nan=True)


# --- aggregate-then-rank versus rank-then-aggregate ------------------------------------------------------------


def test_aggregate_then_rank_vs_rank_then_aggregate_hand_case() -> None:
    # F1 per group (g1, g2, g3) and pooled:
    #   A: [10,0,0] 20/20 = 1,  [0,0,1] 0,          [0,0,1] 0;        pooled [10,0,2]  20/22 = 0.909
    #   B: [5,5,5] 10/20 = 0.5, [1,1,0] 2/3,        [1,1,0] 2/3;      pooled [7,7,5]   14/26 = 0.538
    #   C: [4,6,6] 8/20 = 0.4,  [1,2,0] 2/4 = 0.5,  [1,0,0] 1;        pooled [6,8,6]   12/26 = 0.462
    # group ranks: g1 A1 B2 C3; g2 A3 B1 C2; g3 A3 B2 C1 -> sums A 7, B 5, C 6 -> means 7/3, 5/3, 2
    # aggregate-then-rank: A1 B2 C3; rank-then-aggregate: B1 C2 A3
    # tau of [1, 2, 3] and [3, 1, 2]: AB (-1)(+1), AC (-1)(+1), BC (-1)(-1) -> (-1 - 1 + 1) / 3 = -1/3
    counts = np.array(
        [
            [[10, 0, 0], [0, 0, 1], [0, 0, 1]],
            [[5, 5, 5], [1, 1, 0], [1, 1, 0]],
            [[4, 6, 6], [1, 2, 0], [1, 0, 0]],
        ]
    )
    result = aggregate_then_rank_vs_rank_then_aggregate(counts, R21)
    np.testing.assert_allclose(result.pooled_f1, [20 / 22, 14 / 26, 12 / 26])
    np.testing.assert_array_equal(result.aggregate_ranks, [1, 2, 3])
    np.testing.assert_array_equal(result.group_ranks, [[1, 3, 3], [2, 1, 2], [3, 2, 1]])
    np.testing.assert_allclose(result.mean_group_rank, [7 / 3, 5 / 3, 2])
    np.testing.assert_array_equal(result.rank_then_aggregate_ranks, [3, 1, 2])
    assert result.tau == pytest.approx(-1 / 3)
    assert_json_safe(result)


def test_rank_then_aggregate_ties_share_the_best_rank() -> None:
    # A wins g1, B wins g2 (mean ranks 1.5 and 1.5), C is last in both (mean rank 3):
    #   A: [4,0,0] 1, [1,1,1] 0.5;  B: [1,1,1] 0.5, [4,0,0] 1;  C: [0,0,1] 0, [0,0,1] 0
    #   group ranks A [1, 2], B [2, 1], C [3, 3] -> means 1.5, 1.5, 3 -> ranks 1, 1, 3
    #   pooled A [5,1,1] 10/12, B the same 10/12, C [0,0,2] 0 -> ranks 1, 1, 3; tau of equal rankings = 1
    counts = np.array([[[4, 0, 0], [1, 1, 1]], [[1, 1, 1], [4, 0, 0]], [[0, 0, 1], [0, 0, 1]]])
    result = aggregate_then_rank_vs_rank_then_aggregate(counts, R21)
    np.testing.assert_array_equal(result.rank_then_aggregate_ranks, [1, 1, 3])
    np.testing.assert_array_equal(result.aggregate_ranks, [1, 1, 3])
    assert result.tau == pytest.approx(1.0)


# --- seen and unseen groups ------------------------------------------------------------------------------------


def test_seen_unseen_gap_with_fixed_groups() -> None:
    # One case per group: resampling within groups always redraws the same cases, so the intervals are points.
    #   seen [3, 1, 0] -> 6/7; unseen [1, 1, 2] -> 2/5; gap 6/7 - 2/5 = 16/35
    result = seen_unseen_gap(np.array([[3, 1, 0], [1, 1, 2]]), ["s", "u"], {"s"}, 100, 0, R21)
    assert result.seen_f1 == pytest.approx(6 / 7)
    assert result.unseen_f1 == pytest.approx(2 / 5)
    assert result.gap == pytest.approx(16 / 35)
    assert result.seen_ci95 == pytest.approx((6 / 7, 6 / 7))
    assert result.unseen_ci95 == pytest.approx((2 / 5, 2 / 5))
    assert result.gap_ci95 == pytest.approx((16 / 35, 16 / 35))
    assert (result.seen_cases, result.unseen_cases) == (1, 1)
    assert_json_safe(result)


def test_seen_unseen_gap_hand_case_with_resampled_unseen_group() -> None:
    # Unseen group "a" (sorted first, so drawn first) has two cases [2, 0, 0] and [0, 0, 2]; seen groups "b" and
    # "c" one case each, [3, 1, 0] and [1, 1, 0]: seen sums are always [4, 2, 0] -> 8/10 = 0.8.
    # unseen per pattern: "11" [4,0,0] -> 1; "22" [0,0,4] -> 0; "12" [2,0,2] -> 4/6 = 2/3 (also the full value)
    counts = np.array([[2, 0, 0], [3, 1, 0], [0, 0, 2], [1, 1, 0]])
    groups = ["a", "b", "a", "c"]
    resamples, seed = 300, 5
    unseen_of = {"11": 1.0, "22": 0.0, "12": 2 / 3}
    unseen = np.array([unseen_of[key] for key in patterns(resamples, seed)])
    result = seen_unseen_gap(counts, groups, {"b", "c"}, resamples, seed, R21)
    assert result.seen_f1 == pytest.approx(0.8)
    assert result.unseen_f1 == pytest.approx(2 / 3)
    assert result.gap == pytest.approx(0.8 - 2 / 3)
    assert result.seen_ci95 == pytest.approx((0.8, 0.8))
    assert result.unseen_ci95 == pytest.approx(tuple(np.percentile(unseen, [2.5, 97.5])))
    assert result.gap_ci95 == pytest.approx(tuple(np.percentile(0.8 - unseen, [2.5, 97.5])))
    assert (result.seen_cases, result.unseen_cases) == (2, 2)


def test_seen_unseen_gap_without_unseen_cases() -> None:
    result = seen_unseen_gap(np.array([[3, 1, 0], [1, 1, 2]]), ["s", "t"], {"s", "t"}, 50, 0)
    assert result.unseen_f1 is None
    assert result.gap is None
    assert result.gap_ci95 is None
    assert result.seen_f1 is not None
    assert result.to_dict()["unseen_ci95"] is None
    assert_json_safe(result)


def test_seen_unseen_gap_is_seeded_and_shares_draws_across_entries() -> None:
    counts = random_counts(2, 40, seed=8)
    groups = [i % 4 for i in range(40)]
    first = seen_unseen_gap(counts[0], groups, {0, 1}, 200, 3)
    again = seen_unseen_gap(counts[0], groups, {0, 1}, 200, 3)
    other = seen_unseen_gap(counts[0], groups, {0, 1}, 200, 4)
    assert first.to_dict() == again.to_dict()
    assert first.gap_ci95 != other.gap_ci95
    # the same draws for a second entry: its gap interval comes from the weights of bootstrap_ranks' draws
    weights = weights_of(resample_indices(40, 200, np.random.default_rng(3), np.array(groups)), 40)
    seen = np.array(groups) < 2
    second = seen_unseen_gap(counts[1], groups, {0, 1}, 200, 3, R21)
    s, u = weights[:, seen] @ counts[1][seen], weights[:, ~seen] @ counts[1][~seen]
    f1_s, f1_u = (2 * x[:, 0] / (2 * x[:, 0] + x[:, 1] + x[:, 2]) for x in (s, u))
    assert second.gap_ci95 == pytest.approx(tuple(np.percentile(f1_s - f1_u, [2.5, 97.5])), abs=1e-12)
