"""close_pairs against brute force: every same-case pair within the distance on both axes is found, whatever the
coordinates (far apart, huge, negative, many cases), no pair twice, and only pairs of neighbouring cells."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.evaluation.neighbours import close_pairs


def brute(a: np.ndarray, ac: np.ndarray, b: np.ndarray, bc: np.ndarray, d: float) -> set[tuple[int, int]]:
    return {
        (i, j)
        for i in range(len(a))
        for j in range(len(b))
        if ac[i] == bc[j] and abs(a[i, 0] - b[j, 0]) <= d and abs(a[i, 1] - b[j, 1]) <= d
    }


def check(a: np.ndarray, ac: np.ndarray, b: np.ndarray, bc: np.ndarray, d: float) -> None:
    i, j = close_pairs(a, ac, b, bc, d)
    found = list(zip(i.tolist(), j.tolist(), strict=True))
    assert len(found) == len(set(found)), "a pair was returned twice"
    assert brute(a, ac, b, bc, d) <= set(found)
    assert all(ac[x] == bc[y] for x, y in found)


coordinate = st.one_of(
    st.floats(-0.05, 0.05), st.floats(-1e12, 1e12), st.sampled_from([0.0, 0.0075, -0.0075, 0.015, 1e300, -1e300])
)
points = st.lists(st.tuples(coordinate, coordinate, st.integers(0, 3)), max_size=30)


@settings(max_examples=300, deadline=None)
@given(points, points, st.sampled_from([0.0075, 1e-9, 1.0]))
def test_every_close_pair_is_found(left: list, right: list, d: float) -> None:
    a = np.array([p[:2] for p in left], dtype=np.float64).reshape(-1, 2)
    b = np.array([p[:2] for p in right], dtype=np.float64).reshape(-1, 2)
    ac = np.array([p[2] for p in left], dtype=np.int64)
    bc = np.array([p[2] for p in right], dtype=np.int64)
    check(a, ac, b, bc, d)


@pytest.mark.parametrize("seed", range(5))
def test_dense_random_sets_find_every_pair_and_only_neighbours(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a, b = rng.uniform(0, 0.1, (300, 3)), rng.uniform(0, 0.1, (400, 3))
    ac, bc = rng.integers(0, 5, 300), rng.integers(0, 5, 400)
    check(a, ac, b, bc, 0.0075)
    i, j = close_pairs(a, ac, b, bc, 0.0075)
    # candidates come from neighbouring cells only: never farther than two cells on either axis
    assert np.abs(a[i, :2] - b[j, :2]).max() <= 2 * 0.0075


def test_sets_apart_or_empty_give_no_pairs() -> None:
    one = np.zeros((1, 2))
    case = np.zeros(1, dtype=np.int64)
    assert len(close_pairs(one, case, one + 1.0, case, 0.5)[0]) == 0
    assert len(close_pairs(np.zeros((0, 2)), case[:0], one, case, 0.5)[0]) == 0
