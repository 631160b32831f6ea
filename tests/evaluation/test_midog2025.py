"""MIDOG 2025 Track 1 (rules midog2025), docs/scoring.md "MIDOG 2025 Track 1": hand-computed FROC cases, the
official validation, the official output keys, and the FROC score against a direct port of the official loop.

`official_froc` below is that port: the official calc_froc_score step by step, one greedy matching per case
and threshold. bench/froc.py imports it as the baseline it times.
"""

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from app.cli import cli
from worker.evaluation.errors import FormatError
from worker.evaluation.froc import counts_at_thresholds, froc_scores, threshold_list
from worker.evaluation.io import load_ground_truth, parse_multiple_points, read_json, read_predictions
from worker.evaluation.matching import match_greedy
from worker.evaluation.metrics import evaluate
from worker.evaluation.types import ROI_TYPES, CasePredictions, GroundTruth, Rules

R = 7.5e-3
EPS = 1e-6
trapezoid = getattr(np, "trapezoid", None) or np.trapz  # type: ignore[attr-defined,unused-ignore]  # numpy < 2.0
Counter = Callable[[list[list[float]], list[list[float]], float], tuple[int, int, int]]


def repository_counts(gt: list[list[float]], pred: list[list[float]], radius: float) -> tuple[int, int, int]:
    """(TP, FP, FN) of one case with the repository's greedy matching, which reproduces evalutils' rule."""
    c = match_greedy(
        np.array(gt, dtype=np.float64).reshape(-1, 3), np.array(pred, dtype=np.float64).reshape(-1, 3), radius
    )
    return c.tp, c.fp, c.fn


def official_froc(
    ground_truth: list[list[list[float]]],
    detections: list[list[list[float]]],
    *,
    count: Counter = repository_counts,
    radius: float = R,
) -> float:
    """The official calc_froc_score, ported directly: detections[i] holds case i's [x, y, z, class, score] rows."""
    if len(detections) == 0:
        return math.nan
    with_points = [d for d in detections if len(d) > 0]
    if not with_points:
        return math.nan
    every_score = np.array([row[4] for row in np.vstack(with_points)])
    lowest, highest = np.min(every_score), np.max(every_score)
    steps = [lowest] if lowest == highest else np.linspace(lowest, highest, 40).tolist()
    recall_at: dict[float, float] = {}
    fppi_at: dict[float, Any] = {}
    for t in steps:
        tp = fn = 0
        fp_per_case = []
        for case_gt, case_det in zip(ground_truth, detections, strict=True):
            kept = [[x, y, 0] for x, y, _z, _cls, score in case_det if score >= t]
            hits, false_pos, misses = count(case_gt, kept, radius)
            tp += hits
            fn += misses
            fp_per_case.append(false_pos)
        recall_at[t] = tp / (tp + fn + EPS)
        fppi_at[t] = np.mean(fp_per_case)
    fppi = np.array(list(fppi_at.values()))
    recall = np.array(list(recall_at.values()))
    order = np.argsort(fppi)
    grid = np.linspace(0, 8, 50)
    curve = np.interp(grid, fppi[order], recall[order], left=0, right=recall[order][-1])
    return float(trapezoid(curve, grid))


# ---------------------------------------------------------------------------------------------------- builders


def track1_gt(cases: dict[str, tuple[list[tuple[float, float]], int, str]]) -> GroundTruth:
    """name -> (points (x, y) in mm, tumour domain, roi type), in the official 2025 form."""
    return GroundTruth(
        {name: np.array([(x, y, 0.0) for x, y in pts]).reshape(-1, 3) for name, (pts, _, _) in cases.items()},
        {name: {"tumor domain": str(d), "roi type": r} for name, (_, d, r) in cases.items()},
    )


def pred(points: list[tuple[float, float, float]], mitotic: list[bool] | None = None) -> CasePredictions:
    """(x, y, probability) triples; every point "mitotic figure" unless told."""
    return CasePredictions.from_points(
        [(x, y, 0.0) for x, y, _ in points], [p for _, _, p in points], mitotic if mitotic is not None else None
    )


def detections_of(p: CasePredictions) -> list[list[float]]:
    return [
        [*pt, float(m), s]
        for pt, m, s in zip(p.points.tolist(), p.mitotic.tolist(), p.probabilities.tolist(), strict=True)
    ]


def r1(tp: int, fn: int) -> float:
    return tp / (tp + fn + EPS)


# ---------------------------------------------------------------------------------------------------- FROC by hand


def test_one_distinct_score_gives_one_threshold_and_a_flat_curve() -> None:
    gt = track1_gt({"a.tiff": ([(0.1, 0.1)], 0, "hotspot")})
    p = {"a.tiff": pred([(0.1, 0.1, 0.7)])}
    assert threshold_list(np.array([0.7])).tolist() == [0.7]
    froc = evaluate(gt, p, rules="midog2025").overall.froc
    # one threshold: recall 1/(1+eps) at FPPI 0, interpolated as that value over [0, 8]
    assert froc == pytest.approx(8 * r1(1, 0), rel=1e-12)
    assert froc == official_froc([[[0.1, 0.1, 0.0]]], [detections_of(p["a.tiff"])])


def test_no_detection_at_all_or_no_case_is_nan() -> None:
    gt = track1_gt({"a.tiff": ([(0.1, 0.1)], 0, "hotspot"), "b.tiff": ([], 1, "random")})
    report = evaluate(gt, {"a.tiff": pred([]), "b.tiff": pred([])}, rules="midog2025")
    assert math.isnan(report.overall.froc or 0.0)
    assert all(math.isnan(s.froc or 0.0) for s in report.groups.values())
    assert math.isnan(froc_scores([np.zeros((1, 3))], [np.zeros((1, 3))], [np.array([0.5])], [np.zeros(1, bool)])[0])
    doc = report.to_dict()
    assert doc["aggregates"]["froc_auc"] is None  # NaN is written as null
    assert json.loads(json.dumps(doc), parse_constant=pytest.fail)["groups"]["roi type=random"]["froc_auc"] is None


def test_scores_equal_to_a_threshold_are_kept_at_that_threshold() -> None:
    thresholds = np.linspace(0.0, 1.0, 40)
    middle = float(thresholds[13])
    gt_points = np.array([[0.1, 0.1, 0.0], [0.3, 0.3, 0.0]])
    # A hits the first point at the highest score, B the second at exactly threshold 13, F is false at score 0
    points = np.array([[0.1, 0.1, 0.0], [0.3, 0.3, 0.0], [0.9, 0.9, 0.0]])
    scores = np.array([1.0, middle, 0.0])
    assert threshold_list(scores).tolist() == thresholds.tolist()
    counts = counts_at_thresholds([gt_points], [points], [scores], thresholds)
    assert counts.fp[0].tolist() == [1] + [0] * 39  # F counts at t = 0.0 (score >= t), nowhere else
    assert counts.tp[0].tolist() == [2] * 14 + [1] * 26  # B counts up to and including threshold 13
    assert counts.tp[0, -1] == 1  # A, at the top threshold itself
    assert (counts.tp + counts.fn == 2).all()
    p = CasePredictions.from_points(points, scores)
    report = evaluate(track1_gt({"a.tiff": ([(0.1, 0.1), (0.3, 0.3)], 0, "hotspot")}), {"a.tiff": p}, rules="midog2025")
    # FPPI 0 at 39 thresholds with two different recalls: the value follows numpy.argsort's order, as officially
    assert report.overall.froc == official_froc([gt_points.tolist()], [detections_of(p)])


def test_both_names_count_for_froc_but_only_mitotic_figures_for_f1() -> None:
    gt = track1_gt({"a.tiff": ([(0.1, 0.1)], 0, "hotspot")})
    below = evaluate(gt, {"a.tiff": pred([(0.1, 0.1, 0.9)], mitotic=[False])}, rules="midog2025")
    above = evaluate(gt, {"a.tiff": pred([(0.1, 0.1, 0.9)], mitotic=[True])}, rules="midog2025")
    assert (below.overall.tp, below.overall.fp, below.overall.fn) == (0, 0, 1)
    assert below.overall.f1 == EPS / (1 + EPS)
    assert (above.overall.tp, above.overall.fp, above.overall.fn) == (1, 0, 0)
    assert below.overall.froc == above.overall.froc == pytest.approx(8 * r1(1, 0), rel=1e-12)


def test_cases_without_detections_count_in_the_fppi() -> None:
    # a: one hit and one false detection at the same score; b: nothing at all
    a = {"a.tiff": pred([(0.1, 0.1, 0.8), (0.5, 0.5, 0.8)])}
    alone = evaluate(track1_gt({"a.tiff": ([(0.1, 0.1)], 0, "hotspot")}), a, rules="midog2025").overall.froc
    with_b = evaluate(
        track1_gt({"a.tiff": ([(0.1, 0.1)], 0, "hotspot"), "b.tiff": ([], 0, "hotspot")}),
        {**a, "b.tiff": pred([])},
        rules="midog2025",
    ).overall.froc
    # FPPI 1 alone: recall 0 up to grid point 6 (48/49 < 1), r from grid point 7 (56/49): 42.5 steps of 8/49
    assert alone == pytest.approx(r1(1, 0) * 8 / 49 * 42.5, rel=1e-12)
    # FPPI 1/2 with b: recall 0 up to grid point 3 (24/49 < 0.5), r from grid point 4: 45.5 steps of 8/49
    assert with_b == pytest.approx(r1(1, 0) * 8 / 49 * 45.5, rel=1e-12)


def test_a_group_without_ground_truth_has_froc_zero_and_ap_minus_one() -> None:
    gt = track1_gt({"a.tiff": ([(0.1, 0.1)], 0, "hotspot"), "b.tiff": ([], 1, "challenging")})
    p = {"a.tiff": pred([(0.1, 0.1, 0.9)]), "b.tiff": pred([(0.4, 0.4, 0.3), (0.6, 0.6, 0.6)])}
    report = evaluate(gt, p, rules="midog2025")
    empty = report.groups["tumor domain=1"]
    assert empty.froc == 0.0  # recall 0 at every threshold
    assert empty.ap == -1.0
    assert (empty.tp, empty.fp, empty.fn) == (0, 2, 0)
    agg = report.to_dict()["aggregates"]
    assert agg["tumor_1_froc_auc"] == 0.0
    assert agg["roi_type_challenging_froc_auc"] == 0.0
    assert agg["tumor_1_f1"] == EPS / (2 + EPS)


def test_an_absent_roi_type_gets_the_official_values_with_null_froc() -> None:
    gt = track1_gt({"a.tiff": ([(0.1, 0.1)], 0, "hotspot")})
    agg = evaluate(gt, {"a.tiff": pred([(0.1, 0.1, 0.9)])}, rules="midog2025").to_dict()["aggregates"]
    for roi in ("challenging", "random"):
        assert agg[f"roi_type_{roi}_precision"] == 0.0
        assert agg[f"roi_type_{roi}_recall"] == 0.0
        assert agg[f"roi_type_{roi}_f1"] == 1.0  # eps / eps
        assert agg[f"roi_type_{roi}_AP"] == -1.0
        assert agg[f"roi_type_{roi}_froc_auc"] is None  # NaN officially; null here


# ---------------------------------------------------------------------------------------------------- output keys


def test_official_key_names_in_the_official_order() -> None:
    gt = track1_gt(
        {
            "a.tiff": ([(0.1, 0.1)], 10, "hotspot"),
            "b.tiff": ([(0.2, 0.2)], 2, "random"),
            "c.tiff": ([], 2, "hotspot"),
        }
    )
    p = {"a.tiff": pred([(0.1, 0.1, 0.9)]), "b.tiff": pred([(0.5, 0.5, 0.2)]), "c.tiff": pred([])}
    doc = evaluate(gt, p, rules="midog2025").to_dict()
    expected = ["precision", "recall", "f1_score", "froc_auc", "AP"]
    for prefix in ("tumor_2", "tumor_10", *(f"roi_type_{r}" for r in ROI_TYPES)):  # domains in numeric order
        expected += [f"{prefix}_{m}" for m in ("precision", "recall", "f1", "AP", "froc_auc")]
    assert list(doc["aggregates"])[: len(expected)] == expected
    assert {"true_positives", "false_positives", "false_negatives", "cases", "worst_group"} <= set(doc["aggregates"])
    assert set(doc["groups"]) == {"tumor domain=10", "tumor domain=2", "roi type=hotspot", "roi type=random"}
    assert doc["meta"]["rules"] == "midog2025"
    assert doc["aggregates"]["tumor_10_froc_auc"] == doc["groups"]["tumor domain=10"]["froc_auc"]
    assert doc["case"]["b.tiff"] == {"true_positives": 0, "false_negatives": 1, "false_positives": 1}


def test_other_rules_have_no_froc_and_no_official_2025_keys() -> None:
    gt = track1_gt({"a.tiff": ([(0.1, 0.1)], 0, "hotspot")})
    doc = evaluate(gt, {"a.tiff": pred([(0.1, 0.1, 0.9)])}).to_dict()
    assert "froc_auc" not in doc["aggregates"]
    assert not any(k.startswith(("tumor_", "roi_type_")) for k in doc["aggregates"])
    assert "froc_auc" not in doc["groups"]["roi type=hotspot"]


# ---------------------------------------------------------------------------------------------------- cross-check


def random_track1(seed: int) -> tuple[GroundTruth, dict[str, CasePredictions]]:
    """Small dense sets: overlapping candidates, scores drawn from few values (ties), both names, empty cases."""
    rng = np.random.default_rng(seed)
    cases, preds = {}, {}
    for i in range(int(rng.integers(1, 12))):
        n_gt, n_pred = int(rng.integers(0, 7)), int(rng.integers(0, 10))
        g = [(float(x), float(y)) for x, y in rng.uniform(0, 0.04, (n_gt, 2))]
        pts = rng.uniform(0, 0.04, (n_pred, 2))
        if rng.random() < 0.5:
            scores = rng.choice([0.1, 0.25, 0.5, 0.75, 1.0], n_pred)
        else:
            scores = rng.uniform(0, 1, n_pred).round(2)
        cases[f"{i:02d}.tiff"] = (g, int(rng.integers(0, 3)), ROI_TYPES[int(rng.integers(0, 3))])
        preds[f"{i:02d}.tiff"] = pred(
            [(float(x), float(y), float(s)) for (x, y), s in zip(pts, scores, strict=True)],
            mitotic=(rng.random(n_pred) < 0.6).tolist(),
        )
    return track1_gt(cases), preds


def official_sets(gt: GroundTruth, preds: dict[str, CasePredictions]) -> dict[str, float]:
    """The official FROC values by the direct port: whole set, each tumour domain, each roi type present."""
    names = list(gt.cases)
    members: dict[str, list[str]] = {"all": names}
    for name in names:
        for dim, value in gt.labels[name].items():
            members.setdefault(f"{dim}={value}", []).append(name)
    return {
        label: official_froc([gt.cases[n].tolist() for n in ns], [detections_of(preds[n]) for n in ns])
        for label, ns in members.items()
    }


@pytest.mark.parametrize("seed", range(20))
def test_froc_equals_the_direct_port_of_the_official_loop(seed: int) -> None:
    gt, preds = random_track1(seed)
    report = evaluate(gt, preds, rules="midog2025")
    ours = {"all": report.overall.froc, **{label: s.froc for label, s in report.groups.items()}}
    expected = official_sets(gt, preds)
    assert ours.keys() == expected.keys()
    for label, value in expected.items():
        got = ours[label]
        assert got is not None
        assert (math.isnan(value) and math.isnan(got)) or got == value, (label, got, value)


def evalutils_counts(gt: list[list[float]], pred: list[list[float]], radius: float) -> tuple[int, int, int]:
    """evalutils' score_detection, in its own way: sklearn BallTree radius query sorted by distance."""
    from sklearn.neighbors import BallTree

    if len(gt) == 0:
        return 0, len(pred), 0
    if len(pred) == 0:
        return 0, 0, len(gt)
    hits = BallTree(np.array(pred)).query_radius(X=gt, r=radius, return_distance=True, sort_results=True)[0]
    used = [False] * len(pred)
    tp = 0
    for candidates in hits:
        for j in candidates:
            if not used[j]:
                used[j] = True
                tp += 1
                break
    return tp, used.count(False), len(gt) - tp


@pytest.mark.parametrize("seed", range(100, 105))
def test_froc_equals_the_official_loop_with_evalutils_matching(seed: int) -> None:
    pytest.importorskip("sklearn.neighbors", reason="scikit-learn is a test dependency (dev extra)")
    gt, preds = random_track1(seed)
    names = list(gt.cases)
    expected = official_froc(
        [gt.cases[n].tolist() for n in names], [detections_of(preds[n]) for n in names], count=evalutils_counts
    )
    got = evaluate(gt, preds, rules="midog2025").overall.froc
    assert got is not None
    assert (math.isnan(expected) and math.isnan(got)) or got == expected


def test_thresholds_that_linspace_repeats_count_once() -> None:
    low = 0.5
    high = float(np.nextafter(np.nextafter(low, 1.0), 1.0))  # two ulps apart: linspace repeats values
    assert len(set(np.linspace(low, high, 40).tolist())) < 40
    assert threshold_list(np.array([low, high])).tolist() == list(dict.fromkeys(np.linspace(low, high, 40).tolist()))
    gt = track1_gt({"a.tiff": ([(0.1, 0.1), (0.3, 0.3)], 0, "hotspot"), "b.tiff": ([], 0, "random")})
    p = {"a.tiff": pred([(0.1, 0.1, high), (0.5, 0.5, low)]), "b.tiff": pred([(0.3, 0.3, low)])}
    names = list(gt.cases)
    expected = official_froc([gt.cases[n].tolist() for n in names], [detections_of(p[n]) for n in names])
    assert evaluate(gt, p, rules="midog2025").overall.froc == expected


def test_many_groups_are_scored_in_several_passes_with_the_same_values() -> None:
    gt, preds = random_track1(11)
    while len(gt.cases) < 60:  # one group per case: 61 sets of up to 40 thresholds, more than one pass holds
        more_gt, more_preds = random_track1(len(gt.cases) + 1000)
        offset = len(gt.cases)
        renamed = {n: f"{offset + i:03d}.tiff" for i, n in enumerate(more_gt.cases)}
        gt = GroundTruth(
            {**gt.cases, **{renamed[n]: v for n, v in more_gt.cases.items()}},
            {**gt.labels, **{renamed[n]: v for n, v in more_gt.labels.items()}},
        )
        preds = {**preds, **{renamed[n]: v for n, v in more_preds.items()}}
    report = evaluate(gt, preds, rules="midog2025", groups={n: f"case {n}" for n in gt.cases})
    for n in gt.cases:
        expected = official_froc([gt.cases[n].tolist()], [detections_of(preds[n])])
        got = report.groups[f"case {n}"].froc
        assert got is not None
        assert (math.isnan(expected) and math.isnan(got)) or got == expected, n
    assert report.overall.froc == official_sets(gt, preds)["all"]


def test_counts_per_threshold_equal_one_matching_per_threshold() -> None:
    gt, preds = random_track1(7)
    names = list(gt.cases)
    thresholds = np.array([0.0, 0.1, 0.25, 0.3, 0.5, 0.75, 1.0])
    counts = counts_at_thresholds(
        [gt.cases[n] for n in names],
        [preds[n].points for n in names],
        [preds[n].probabilities for n in names],
        thresholds,
    )
    for i, n in enumerate(names):
        for j, t in enumerate(thresholds.tolist()):
            kept = preds[n].points[preds[n].probabilities >= t].copy()
            kept[:, 2] = 0.0
            c = match_greedy(gt.cases[n], kept, R)
            assert (counts.tp[i, j], counts.fp[i, j], counts.fn[i, j]) == (c.tp, c.fp, c.fn)


# ---------------------------------------------------------------------------------------------------- validation

GOOD = {"name": "mitotic figure", "point": [0.1, 0.1, 0], "probability": 0.5}


@pytest.mark.parametrize(
    ("point", "fragment"),
    [
        ("not a point", "each point must be an object"),
        ({"point": [0.1, 0.1, 0], "probability": 0.5}, 'missing "name"'),
        ({"name": "mitotic figure", "point": [0.1, 0.1, 0]}, 'missing "probability"'),
        ({"name": "mitotic figure", "probability": 0.5}, 'missing "point"'),
        ({**GOOD, "name": "mitosis"}, 'name: must be "mitotic figure" or "non-mitotic figure"'),
        ({**GOOD, "name": None}, 'name: must be "mitotic figure" or "non-mitotic figure"'),
        ({**GOOD, "probability": None}, "probability: required under midog2025"),
        ({**GOOD, "point": [-0.0076, 0.1, 0]}, "x = -0.0076 mm lies below -0.0075 mm"),
        ({**GOOD, "point": [0.1, -1, 0]}, "y = -1.0 mm lies below -0.0075 mm"),
        ({**GOOD, "point": [1500, 0.1, 0]}, "pixel coordinates are the likely cause"),
        ({**GOOD, "point": [0.1, 10.000001, 0]}, "y = 10.000001 mm lies above 10 mm"),
    ],
)
def test_midog2025_refuses_each_point_the_official_evaluator_refuses(point: Any, fragment: str) -> None:
    obj = {"type": "Multiple points", "points": [GOOD, point]}
    with pytest.raises(FormatError) as info:
        parse_multiple_points(obj, source="p.json", case="007.tiff", rules=Rules.MIDOG2025)
    message = str(info.value)
    assert message.startswith("p.json: case '007.tiff': point 1")
    assert fragment in message
    assert "\n" not in message


def test_unnamed_points_and_missing_probabilities_pass_midog2022_only() -> None:
    obj = {"points": [{"point": [0.1, 0.1, 0]}, {"point": [20.0, -1.0, 0], "name": None, "probability": None}]}
    assert len(parse_multiple_points(obj, source="p.json", case="a")) == 2
    with pytest.raises(FormatError, match='point 0: missing "name"'):
        parse_multiple_points(obj, source="p.json", case="a", rules="midog2025")


def test_the_boundaries_themselves_are_accepted() -> None:
    obj = {"points": [{**GOOD, "point": [-0.0075, 10, 0]}, {**GOOD, "point": [10.0, -0.0075, 0.5]}]}
    strict = parse_multiple_points(obj, source="p.json", case="a", rules="midog2025")
    assert strict.points.tolist() == [[-0.0075, 10.0, 0.0], [10.0, -0.0075, 0.5]]
    assert strict.mitotic.tolist() == [True, True]


def test_a_list_as_name_is_a_format_error_not_a_crash() -> None:
    with pytest.raises(FormatError, match="name: must be"):
        parse_multiple_points({"points": [{"point": [0, 0, 0], "name": ["x"]}]}, source="p.json", case="a")


def test_csv_predictions_follow_the_same_rules(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("image,x,y,probability,name\na.tiff,0.1,0.1,0.5,mitotic figure\na.tiff,0.2,0.2,,mitotic figure\n")
    assert len(read_predictions(path, csv_units="mm")["a.tiff"]) == 2
    with pytest.raises(FormatError, match=r"case 'a.tiff': point 3: probability: required under midog2025"):
        read_predictions(path, csv_units="mm", rules="midog2025")
    path.write_text("image,x,y,probability,name\na.tiff,12,0.1,0.5,mitotic figure\n")
    with pytest.raises(FormatError, match="pixel coordinates are the likely cause"):
        read_predictions(path, csv_units="mm", rules="midog2025")


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        ({"tumor domain": 0, "roi type": "hotspot"}, 'missing "annotations"'),
        ({"annotations": [], "tumor domain": 0}, 'missing "roi type"'),
        ({"annotations": [], "tumor domain": 0, "roi type": "Hotspot"}, "unknown roi type 'Hotspot'"),
        ({"annotations": [], "roi type": "random"}, 'missing "tumor domain"'),
        ({"annotations": [], "tumor domain": None, "roi type": "random"}, "expected an integer or a string"),
        ([[0.1, 0.1, 0]], "midog2025 needs the official 2025 format"),
    ],
)
def test_midog2025_ground_truth_needs_annotations_a_domain_and_a_known_roi_type(
    tmp_path: Path, entry: Any, fragment: str
) -> None:
    path = tmp_path / "gt.json"
    path.write_text(
        json.dumps({"001.tiff": {"annotations": [], "tumor domain": 1, "roi type": "random"}, "002.tiff": entry})
    )
    with pytest.raises(FormatError) as info:
        load_ground_truth(path, rules="midog2025")
    assert "case '002.tiff'" in str(info.value)
    assert fragment in str(info.value)


def test_evaluate_refuses_labels_or_probabilities_the_2025_rules_need() -> None:
    no_roi = GroundTruth({"a.tiff": np.zeros((0, 3))}, {"a.tiff": {"tumor domain": "0"}})
    with pytest.raises(FormatError, match="case 'a.tiff'.*roi type"):
        evaluate(no_roi, {"a.tiff": pred([])}, rules="midog2025")
    gt = track1_gt({"a.tiff": ([(0.1, 0.1)], 0, "hotspot")})
    unscored = {"a.tiff": CasePredictions.from_points([(0.1, 0.1, 0.0), (0.2, 0.2, 0.0)], [0.5, math.nan])}
    with pytest.raises(FormatError, match="case 'a.tiff': point 1: probability"):
        evaluate(gt, unscored, rules="midog2025")


# ---------------------------------------------------------------------------------------------------- command


def write_track1(tmp_path: Path, seed: int) -> tuple[Path, Path, GroundTruth, dict[str, CasePredictions]]:
    gt, preds = random_track1(seed)
    gt_doc = {
        n: {
            "annotations": gt.cases[n].tolist(),
            "tumor domain": int(gt.labels[n]["tumor domain"]),
            "roi type": gt.labels[n]["roi type"],
        }
        for n in gt.cases
    }
    pred_doc = {
        n: {
            "type": "Multiple points",
            "points": [
                {"name": "mitotic figure" if m else "non-mitotic figure", "point": pt, "probability": s}
                for pt, m, s in zip(p.points.tolist(), p.mitotic.tolist(), p.probabilities.tolist(), strict=True)
            ],
        }
        for n, p in preds.items()
    }
    gt_path, pred_path = tmp_path / "gt.json", tmp_path / "predictions.json"
    gt_path.write_text(json.dumps(gt_doc))
    pred_path.write_text(json.dumps(pred_doc))
    return gt_path, pred_path, gt, preds


def test_score_command_prints_every_official_key_as_valid_json(tmp_path: Path) -> None:
    gt_path, pred_path, gt, preds = write_track1(tmp_path, 3)
    args = ["score", "--rules", "midog2025", "--ground-truth", str(gt_path), "--predictions", str(pred_path)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout, parse_constant=pytest.fail)  # no NaN in the output
    agg = doc["aggregates"]
    domains = sorted({int(v["tumor domain"]) for v in gt.labels.values()})
    official = ["precision", "recall", "f1_score", "froc_auc", "AP"]
    for prefix in [f"tumor_{d}" for d in domains] + [f"roi_type_{r}" for r in ROI_TYPES]:
        official += [f"{prefix}_{m}" for m in ("precision", "recall", "f1", "AP", "froc_auc")]
    assert [k for k in agg if k in official] == official
    expected = official_sets(gt, preds)
    assert agg["froc_auc"] == expected["all"]
    for d in domains:
        assert agg[f"tumor_{d}_froc_auc"] == expected[f"tumor domain={d}"]
    report = evaluate(load_ground_truth(gt_path), read_predictions(pred_path), rules="midog2025").to_dict()
    assert agg == json.loads(json.dumps(report["aggregates"]))


def test_score_command_exits_2_naming_case_and_point(tmp_path: Path) -> None:
    gt_path, _, _, _ = write_track1(tmp_path, 4)
    first = next(iter(read_json(gt_path)))
    bad = tmp_path / "bad.json"
    points = [GOOD, {**GOOD, "point": [812.0, 640.0, 0]}]
    bad.write_text(json.dumps({first: {"type": "Multiple points", "points": points}}))
    args = ["score", "--rules", "midog2025", "--ground-truth", str(gt_path), "--predictions", str(bad)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert f"case '{first}': point 1" in lines[0]
    assert "pixel coordinates" in lines[0]
