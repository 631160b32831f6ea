"""Hand-computed cases for every matching rule of docs/scoring.md, Matching (each line says what it moves)."""

import numpy as np
import pytest

from worker.evaluation.matching import Counts, match_cases, match_greedy, match_optimal

R = 7.5e-3


def pts(*xy: tuple[float, float] | tuple[float, float, float]) -> np.ndarray:
    return np.array([p if len(p) == 3 else (*p, 0.0) for p in xy], dtype=np.float64).reshape(-1, 3)


def test_empty_ground_truth_makes_every_prediction_a_false_positive() -> None:
    assert match_greedy(pts(), pts((0.1, 0.1), (0.2, 0.2)), R) == Counts(tp=0, fp=2, fn=0)


def test_no_predictions_make_every_point_a_miss() -> None:
    assert match_greedy(pts((0.1, 0.1), (0.2, 0.2)), pts(), R) == Counts(tp=0, fp=0, fn=2)


def test_both_empty_count_nothing() -> None:
    assert match_greedy(pts(), pts(), R) == Counts(0, 0, 0)


def test_greedy_result_depends_on_ground_truth_order() -> None:
    a, b = (0.100, 0.100), (0.110, 0.100)
    predictions = pts((0.103, 0.100), (0.0935, 0.100))
    # A first takes its nearest (0.103), which is B's only candidate: B misses, 0.0935 stays unused.
    assert match_greedy(pts(a, b), predictions, R) == Counts(tp=1, fp=1, fn=1)
    # B first takes 0.103, then A takes 0.0935: both hit.
    assert match_greedy(pts(b, a), predictions, R) == Counts(tp=2, fp=0, fn=0)


def test_optimal_matching_is_order_independent_extra() -> None:
    a, b = (0.100, 0.100), (0.110, 0.100)
    predictions = pts((0.103, 0.100), (0.0935, 0.100))
    assert match_optimal(pts(a, b), predictions, R) == Counts(tp=2, fp=0, fn=0)
    assert match_optimal(pts(b, a), predictions, R) == Counts(tp=2, fp=0, fn=0)


def test_boundary_is_inclusive_and_the_next_float_above_misses() -> None:
    origin = pts((0.0, 0.0))
    assert match_greedy(origin, pts((R, 0.0)), R) == Counts(tp=1, fp=0, fn=0)  # exactly r: hit
    above = np.nextafter(R, 1.0)
    assert match_greedy(origin, pts((above, 0.0)), R) == Counts(tp=0, fp=1, fn=1)  # next float: miss


def test_z_counts_in_the_distance() -> None:
    # 6 um in x and 6 um in z: 8.49 um in 3-D, beyond the radius although x alone is within it.
    assert match_greedy(pts((0.0, 0.0, 0.0)), pts((0.006, 0.0, 0.006)), R) == Counts(tp=0, fp=1, fn=1)
    assert match_greedy(pts((0.0, 0.0, 0.0)), pts((0.006, 0.0, 0.0)), R) == Counts(tp=1, fp=0, fn=0)


def test_one_prediction_between_two_points_hits_only_one() -> None:
    assert match_greedy(pts((0.100, 0.1), (0.110, 0.1)), pts((0.105, 0.1)), R) == Counts(tp=1, fp=0, fn=1)


def test_two_predictions_on_one_point_give_one_false_positive() -> None:
    assert match_greedy(pts((0.1, 0.1)), pts((0.1, 0.1), (0.1, 0.1)), R) == Counts(tp=1, fp=1, fn=0)


def test_duplicate_ground_truth_points_each_need_a_prediction() -> None:
    assert match_greedy(pts((0.1, 0.1), (0.1, 0.1)), pts((0.1, 0.1)), R) == Counts(tp=1, fp=0, fn=1)


def test_nearest_candidate_is_taken_first() -> None:
    # The first point takes its nearest candidate (index 1), leaving index 0 for the second point.
    gt = pts((0.100, 0.1), (0.094, 0.1))
    predictions = pts((0.096, 0.1), (0.101, 0.1))
    assert match_greedy(gt, predictions, R) == Counts(tp=2, fp=0, fn=0)
    # Nearest-first is greedy: the first point takes 0.097, the second point's only candidate, and misses
    # nothing itself, although giving it 0.106 instead would have hit both.
    gt2 = pts((0.100, 0.1), (0.0905, 0.1))
    predictions2 = pts((0.097, 0.1), (0.106, 0.1))
    assert match_greedy(gt2, predictions2, R) == Counts(tp=1, fp=1, fn=1)
    assert match_optimal(gt2, predictions2, R) == Counts(tp=2, fp=0, fn=0)


def test_equidistant_candidates_lower_prediction_index_wins() -> None:
    # Both predictions lie exactly 2**-8 mm from A (binary fractions, so the distances are equal as floats);
    # A must take index 0, so B (whose only candidate is index 1) still hits.
    gt = pts((0.5, 0.5), (0.5 + 2**-7, 0.5))
    predictions = pts((0.5 - 2**-8, 0.5), (0.5 + 2**-8, 0.5))
    assert match_greedy(gt, predictions, R) == Counts(tp=2, fp=0, fn=0)
    # Swapping the prediction order makes A take the one B needed: B misses.
    assert match_greedy(gt, predictions[::-1].copy(), R) == Counts(tp=1, fp=1, fn=1)


def test_batch_matching_keeps_cases_apart() -> None:
    # Identical coordinates in different cases must never match each other.
    counts = match_cases([pts((0.1, 0.1)), pts()], [pts(), pts((0.1, 0.1))], R)
    assert counts.tolist() == [[0, 0, 1], [0, 1, 0]]


@pytest.mark.parametrize("method", ["greedy", "optimal"])
def test_counts_invariants_on_random_cases(method: str) -> None:
    rng = np.random.default_rng(7)
    gt = [rng.uniform(0, 0.2, size=(rng.integers(0, 40), 3)) * [1, 1, 0] for _ in range(30)]
    pred = [rng.uniform(0, 0.2, size=(rng.integers(0, 40), 3)) * [1, 1, 0] for _ in range(30)]
    counts = match_cases(gt, pred, R, method=method)
    tp, fp, fn = counts.T
    assert (tp + fn == [len(g) for g in gt]).all()
    assert (tp + fp == [len(p) for p in pred]).all()
    if method == "optimal":
        assert (tp >= match_cases(gt, pred, R)[:, 0]).all()
