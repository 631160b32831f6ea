"""AP against torchmetrics' MeanAveragePrecision itself, configured as the official MIDOG evaluation configures it.

torchmetrics needs torchvision, which the project does not install (it is optional and large); this test runs
where both are present (e.g. the GPU machine) and is skipped elsewhere. test_ap_pycocotools.py checks the same
numbers against pycocotools everywhere.
"""

import importlib.util

import numpy as np
import pytest

torch = pytest.importorskip("torch")
detection = pytest.importorskip("torchmetrics.detection")
if importlib.util.find_spec("pycocotools") is None:
    pytest.skip("torchmetrics' COCO backend (pycocotools) is not installed", allow_module_level=True)

from tests.evaluation.coco_reference import random_set  # noqa: E402
from worker.evaluation.ap import BOX_HALF_SIZE_MM, rank_and_match  # noqa: E402


def torchmetrics_map50(gt: list[np.ndarray], pred: list[np.ndarray], scores: list[np.ndarray]) -> float:
    metric = detection.MeanAveragePrecision(
        box_format="xyxy",
        iou_type="bbox",
        max_detection_thresholds=[1, 10, 1_000_000],
        rec_thresholds=np.arange(0, 1.01, 0.01).tolist(),
        backend="pycocotools",
    )
    h = BOX_HALF_SIZE_MM

    def boxes(points: np.ndarray) -> "torch.Tensor":
        xyxy = [[x - h, y - h, x + h, y + h] for x, y in points[:, :2].tolist()]
        return torch.tensor(xyxy, dtype=torch.float32).reshape(-1, 4)

    for g, p, s in zip(gt, pred, scores, strict=True):
        probs = np.where(np.isnan(s), 0.5, s).tolist()
        metric.update(
            [
                {
                    "boxes": boxes(p),
                    "scores": torch.tensor(probs, dtype=torch.float32),
                    "labels": torch.ones(len(p), dtype=torch.int64),
                }
            ],
            [{"boxes": boxes(g), "labels": torch.ones(len(g), dtype=torch.int64)}],
        )
    return float(metric.compute()["map_50"])


@pytest.mark.parametrize("seed", range(20))
def test_ap_matches_torchmetrics(seed: int) -> None:
    gt, pred, scores = random_set(seed)
    ours = rank_and_match(gt, pred, scores).average_precision()
    assert ours == pytest.approx(torchmetrics_map50(gt, pred, scores), abs=1e-6)
