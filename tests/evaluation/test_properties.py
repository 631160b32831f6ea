"""Property tests: invariants of the counts and metrics that must hold for any input."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.evaluation.metrics import evaluate
from worker.evaluation.types import CasePredictions, GroundTruth

coord = st.floats(min_value=0.0, max_value=0.05, allow_nan=False, allow_infinity=False)
point = st.tuples(coord, coord)
case_points = st.lists(point, max_size=12)


@st.composite
def scored_sets(draw: st.DrawFn) -> tuple[GroundTruth, dict[str, CasePredictions], dict[str, str]]:
    n_cases = draw(st.integers(min_value=1, max_value=6))
    gt, pred, groups = {}, {}, {}
    for i in range(n_cases):
        name = f"{i:03d}.tiff"
        gt[name] = np.array([(x, y, 0.0) for x, y in draw(case_points)]).reshape(-1, 3)
        pts = [(x, y, 0.0) for x, y in draw(case_points)]
        probs = draw(st.lists(st.sampled_from([0.1, 0.5, 0.9, float("nan")]), min_size=len(pts), max_size=len(pts)))
        mitotic = draw(st.lists(st.booleans(), min_size=len(pts), max_size=len(pts)))
        pred[name] = CasePredictions.from_points(np.array(pts).reshape(-1, 3), probs, mitotic)
        groups[name] = draw(st.sampled_from(["A", "B", "C"]))
    return GroundTruth(gt), pred, groups


@settings(max_examples=150, deadline=None)
@given(scored_sets())
def test_counts_partition_ground_truth_and_predictions(data) -> None:
    gt, pred, groups = data
    report = evaluate(gt, pred, groups=groups)
    for name, counts in report.cases.items():
        assert counts.tp + counts.fn == len(gt.cases[name])
        assert counts.tp + counts.fp == int(pred[name].mitotic.sum())


@settings(max_examples=150, deadline=None)
@given(scored_sets())
def test_metrics_are_bounded_and_groups_sum_to_overall(data) -> None:
    gt, pred, groups = data
    report = evaluate(gt, pred, groups=groups)
    for scores in [report.overall, *report.groups.values()]:
        assert 0.0 <= scores.f1 <= 1.0
        assert 0.0 <= scores.precision <= 1.0
        assert 0.0 <= scores.recall <= 1.0
        assert scores.ap == -1.0 or 0.0 <= scores.ap <= 1.0
    for attr in ("tp", "fp", "fn"):
        assert sum(getattr(s, attr) for s in report.groups.values()) == getattr(report.overall, attr)


@settings(max_examples=100, deadline=None)
@given(scored_sets(), st.randoms(use_true_random=False))
def test_permuting_predictions_never_changes_counts(data, random) -> None:
    gt, pred, _ = data
    shuffled = {}
    for name, p in pred.items():
        order = list(range(len(p)))
        random.shuffle(order)
        shuffled[name] = CasePredictions(p.points[order], p.probabilities[order], p.mitotic[order])
    assert evaluate(gt, pred).case_counts.tolist() == evaluate(gt, shuffled).case_counts.tolist()


@settings(max_examples=100, deadline=None)
@given(scored_sets())
def test_perfect_predictions_give_f1_one(data) -> None:
    gt, _, _ = data
    perfect = {name: CasePredictions.from_points(points) for name, points in gt.cases.items()}
    report = evaluate(gt, perfect)
    assert report.overall.fp == report.overall.fn == 0
    assert abs(report.overall.f1 - 1.0) < 1e-12
    assert report.overall.ap == -1.0 or abs(report.overall.ap - 1.0) < 1e-12
