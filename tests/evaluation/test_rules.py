"""Hand-computed cases for docs/scoring.md: Which points count, Aggregation, Missing and unknown cases."""

import numpy as np
import pytest

from worker.evaluation.errors import FormatError
from worker.evaluation.formulas import prf
from worker.evaluation.metrics import evaluate
from worker.evaluation.types import CasePredictions, GroundTruth, Rules


def gt_of(**cases: list[tuple[float, float]]) -> GroundTruth:
    return GroundTruth({f"{k}.tiff": np.array([(x, y, 0.0) for x, y in v]).reshape(-1, 3) for k, v in cases.items()})


def pred(points: list[tuple[float, float]], names: list[bool] | None = None, probs: list[float] | None = None):
    return CasePredictions.from_points([(x, y, 0.0) for x, y in points], probs, names)


def test_non_mitotic_points_do_not_count_for_f1_under_midog2022() -> None:
    gt = gt_of(a=[(0.1, 0.1)])
    p = {"a.tiff": pred([(0.1, 0.1), (0.5, 0.5)], names=[False, True])}
    report = evaluate(gt, p)
    assert (report.overall.tp, report.overall.fp, report.overall.fn) == (0, 1, 1)  # the hit was non-mitotic


def test_every_point_counts_under_midog2021_and_there_is_no_ap() -> None:
    gt = gt_of(a=[(0.1, 0.1)])
    p = {"a.tiff": pred([(0.1, 0.1), (0.5, 0.5)], names=[False, True])}
    report = evaluate(gt, p, rules=Rules.MIDOG2021)
    assert (report.overall.tp, report.overall.fp, report.overall.fn) == (1, 1, 0)
    assert report.overall.ap is None
    assert "AP" not in report.to_dict()["aggregates"]
    assert report.overall.f1 == 2 / 3  # plain formula, no eps


def test_probability_is_never_thresholded_for_f1() -> None:
    gt = gt_of(a=[(0.1, 0.1)])
    report = evaluate(gt, {"a.tiff": pred([(0.1, 0.1)], probs=[0.01])})
    assert report.overall.tp == 1


def test_non_mitotic_points_still_count_for_ap() -> None:
    gt = gt_of(a=[(0.1, 0.1)])
    only_non_mitotic = evaluate(gt, {"a.tiff": pred([(0.1, 0.1)], names=[False], probs=[0.3])})
    assert only_non_mitotic.overall.f1 < 1e-6
    assert only_non_mitotic.overall.ap == pytest.approx(1.0, abs=1e-15)  # precision 1 / (1 + machine eps)


def test_z_is_ignored_for_f1_under_midog2022_but_not_2021() -> None:
    gt = gt_of(a=[(0.1, 0.1)])
    far_in_z = {"a.tiff": CasePredictions.from_points([(0.1, 0.1, 5.0)])}
    assert evaluate(gt, far_in_z).overall.tp == 1
    assert evaluate(gt, far_in_z, rules="midog2021").overall.tp == 0


def test_counts_are_micro_summed_over_cases() -> None:
    gt = gt_of(a=[(0.1, 0.1)], b=[(0.1, 0.1), (0.2, 0.2), (0.3, 0.3)])
    p = {"a.tiff": pred([(0.1, 0.1)]), "b.tiff": pred([(0.9, 0.9)])}
    report = evaluate(gt, p)
    assert (report.overall.tp, report.overall.fp, report.overall.fn) == (1, 1, 3)
    eps = 1e-6
    assert report.overall.f1 == (2 + eps) / (2 + 1 + 3 + eps)  # micro, not the mean of per-case F1s


def test_empty_group_has_f1_one_and_zero_precision_recall() -> None:
    gt = gt_of(a=[(0.1, 0.1)], b=[])
    p = {"a.tiff": pred([(0.1, 0.1)]), "b.tiff": pred([])}
    report = evaluate(gt, p, groups={"a": "S1", "b": "S2"})
    empty = report.groups["S2"]
    assert (empty.tp, empty.fp, empty.fn) == (0, 0, 0)
    assert (empty.precision, empty.recall, empty.f1) == (0.0, 0.0, 1.0)
    assert empty.ap == -1.0  # no ground truth at all


def test_midog2021_zero_over_zero_is_defined() -> None:
    precision, recall, f1 = prf(0, 0, 0, Rules.MIDOG2021)
    assert (float(precision), float(recall), float(f1)) == (0.0, 0.0, 1.0)
    precision, recall, f1 = prf(0, 3, 0, Rules.MIDOG2021)
    assert (float(precision), float(recall), float(f1)) == (0.0, 0.0, 0.0)


def test_a_case_may_belong_to_several_groups_and_groups_sum_per_dimension() -> None:
    gt = GroundTruth(
        cases={"a.tiff": np.array([[0.1, 0.1, 0]]), "b.tiff": np.array([[0.2, 0.2, 0]])},
        labels={
            "a.tiff": {"tumor domain": "0", "roi type": "hotspot"},
            "b.tiff": {"tumor domain": "1", "roi type": "hotspot"},
        },
    )
    p = {"a.tiff": pred([(0.1, 0.1)]), "b.tiff": pred([])}
    report = evaluate(gt, p, groups={"a.tiff": "Scanner A", "b.tiff": "Scanner A"})
    assert set(report.groups) == {"Scanner A", "tumor domain=0", "tumor domain=1", "roi type=hotspot"}
    assert report.groups["roi type=hotspot"].tp == report.overall.tp == 1
    assert report.groups["tumor domain=0"].tp + report.groups["tumor domain=1"].tp == 1


def test_missing_case_error_lists_names() -> None:
    gt = gt_of(a=[(0.1, 0.1)], b=[(0.1, 0.1)], c=[])
    with pytest.raises(FormatError, match=r"missing predictions for 2 image\(s\): 'b.tiff', 'c.tiff'"):
        evaluate(gt, {"a": pred([])})


def test_missing_case_fn_counts_its_ground_truth_as_misses() -> None:
    gt = gt_of(a=[(0.1, 0.1)], b=[(0.1, 0.1), (0.2, 0.2)])
    report = evaluate(gt, {"a": pred([(0.1, 0.1)])}, missing_cases="fn")
    assert report.cases["b.tiff"].fn == 2
    assert (report.overall.tp, report.overall.fn) == (1, 2)


def test_missing_case_skip_reproduces_the_official_silent_skip() -> None:
    gt = gt_of(a=[(0.1, 0.1)], b=[(0.1, 0.1), (0.2, 0.2)])
    report = evaluate(gt, {"a": pred([(0.1, 0.1)]), "zzz": pred([])}, missing_cases="skip")
    assert list(report.cases) == ["a.tiff"]
    assert (report.overall.tp, report.overall.fn) == (1, 0)
    assert any("skipped 1 case" in w for w in report.warnings)
    assert any("'zzz'" in w for w in report.warnings)


def test_unknown_images_are_rejected_unless_skipping() -> None:
    gt = gt_of(a=[(0.1, 0.1)])
    with pytest.raises(FormatError, match="not in the ground truth: 'other.tiff'"):
        evaluate(gt, {"a": pred([]), "other.tiff": pred([])}, missing_cases="fn")


def test_predictions_keyed_by_stem_and_by_full_name_twice_is_an_error() -> None:
    gt = gt_of(a=[(0.1, 0.1)])
    with pytest.raises(FormatError, match="given twice"):
        evaluate(gt, {"a": pred([]), "a.tiff": pred([])})


def test_groups_must_label_every_scored_case() -> None:
    gt = gt_of(a=[(0.1, 0.1)], b=[])
    with pytest.raises(FormatError, match="no group label for 1 case"):
        evaluate(gt, {"a": pred([]), "b": pred([])}, groups={"a.tiff": "S1"})


def test_optimal_matching_is_reported_beside_the_official_counts() -> None:
    gt = gt_of(a=[(0.100, 0.1), (0.110, 0.1)])
    report = evaluate(gt, {"a": pred([(0.103, 0.1), (0.0935, 0.1)])}, optimal=True)
    assert report.overall.tp == 1
    assert report.to_dict()["aggregates"]["optimal_matching"]["true_positives"] == 2


def test_bootstrap_is_seeded_and_brackets_the_f1() -> None:
    rng = np.random.default_rng(0)
    cases = {f"{i}": [(float(x), float(y)) for x, y in rng.uniform(0, 1, (5, 2))] for i in range(20)}
    gt = gt_of(**cases)
    p = {f"{i}.tiff": pred(v[: i % 5]) for i, v in enumerate(cases.values())}
    first = evaluate(gt, p, bootstrap=300, seed=11)
    again = evaluate(gt, p, bootstrap=300, seed=11)
    other = evaluate(gt, p, bootstrap=300, seed=12)
    assert first.overall.ci95 == again.overall.ci95
    assert first.overall.ci95 != other.overall.ci95
    low, high = first.overall.ci95
    assert low < first.overall.f1 < high
