"""AP agrees with pycocotools' COCOeval driven the way torchmetrics drives it (docs/scoring.md, Average precision).

The reference driver and the random sets live in tests/evaluation/coco_reference.py.
"""

import numpy as np
import pytest

from tests.evaluation.coco_reference import R, random_set, reference_map50
from worker.evaluation.ap import rank_and_match
from worker.evaluation.metrics import evaluate
from worker.evaluation.types import CasePredictions, GroundTruth


@pytest.mark.parametrize("seed", range(24))
def test_ap_matches_pycocotools(seed: int) -> None:
    gt, pred, scores = random_set(seed)
    ours = rank_and_match(gt, pred, scores).average_precision()
    reference = reference_map50(gt, pred, scores)
    if sum(len(g) for g in gt) == 0:
        assert ours == reference == -1.0
    else:
        assert ours == pytest.approx(reference, abs=1e-6)


def test_exact_offset_sets_exercise_the_iou_boundary() -> None:
    """Guards the generator: the 7.5 um offsets must sit on both sides of IoU 0.5 after float32 rounding."""
    from worker.evaluation.ap import _iou, _xywh

    gt, _, _ = random_set(3)
    g = np.concatenate(gt)
    ious = _iou(_xywh(g + np.array([R, 0.0, 0.0])), _xywh(g))
    assert (ious >= 0.5).any()
    assert (ious < 0.5).any()


def test_ap_through_evaluate_equals_reference_per_group() -> None:
    gt, pred, scores = random_set(5)
    names = [f"{i:03d}.tiff" for i in range(len(gt))]
    truth = GroundTruth(dict(zip(names, gt, strict=True)))
    predictions = {n: CasePredictions.from_points(p, s) for n, p, s in zip(names, pred, scores, strict=True)}
    groups = {n: "odd" if i % 2 else "even" for i, n in enumerate(names)}
    report = evaluate(truth, predictions, groups=groups)
    assert report.overall.ap == pytest.approx(reference_map50(gt, pred, scores), abs=1e-6)
    for label, parity in (("even", 0), ("odd", 1)):
        idx = [i for i in range(len(gt)) if i % 2 == parity]
        if not idx:
            continue
        expected = reference_map50([gt[i] for i in idx], [pred[i] for i in idx], [scores[i] for i in idx])
        assert report.groups[label].ap == pytest.approx(expected, abs=1e-6)
