"""Scoring an archive on a test set on disk: the runtime's detections, then the scoring core per group.

Only the agreed test-set layout is used (manifest.json, images/, ground-truth/ground-truth.json); the
detections go through the same files a sandboxed run writes, so what is scored here is what the server scores.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from worker.evaluation.io import load_ground_truth, read_predictions
from worker.evaluation.metrics import evaluate
from worker.evaluation.report import Report
from worker.inference.detector import Detector
from worker.inference.images import list_images
from worker.inference.pipeline import run_archive


def case_groups(test_set: Path, dimension: str = "scanner") -> dict[str, str]:
    """Case name -> its label in `dimension`, from the test set's manifest.json."""
    doc = json.loads((test_set / "manifest.json").read_text(encoding="utf-8"))
    return {case["name"]: case["groups"][dimension] for case in doc["cases"]}


def score_archive(
    archive: Path, test_set: Path, output: Path, *, device: str = "cpu", dimension: str = "scanner"
) -> Report:
    """Run `archive` on every image of `test_set`, write the results under `output`, score them per group."""
    detector = Detector(archive, device=torch.device(device))
    run_archive(detector, list_images(test_set), output)
    gt = load_ground_truth(test_set / "ground-truth" / "ground-truth.json")
    return evaluate(gt, read_predictions(output), groups=case_groups(test_set, dimension))
