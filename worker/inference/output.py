"""Writes detections as grand-challenge "Multiple points" JSON, one file per image, and a classifier's outputs
as the MIDOG 2025 Track 2 list, one file per stack. No torch here.

Points are [x_mm, y_mm, 0] with x = column, y = row, mm = spacing_mm * continuous pixel index (pixel centres
at integer indices; docs/scoring.md, Units and coordinates). Each point is named "mitotic figure" when its
probability is at or above the archive's threshold, else "non-mitotic figure" (kept for AP, not counted for F1).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

MITOTIC = "mitotic figure"
NON_MITOTIC = "non-mitotic figure"
ATYPICAL = "atypical"
NORMAL = "normal"


def multiple_points(xy_px: np.ndarray, scores: np.ndarray, *, spacing_mm: float, threshold: float) -> dict[str, Any]:
    """The Multiple points document for one image, from (n, 2) pixel centres (x, y) and (n,) scores."""
    xy_mm = np.asarray(xy_px, dtype=np.float64) * spacing_mm
    probs = np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)
    points = [
        {
            "point": [float(x), float(y), 0.0],
            "probability": float(p),
            "name": MITOTIC if p >= threshold else NON_MITOTIC,
        }
        for (x, y), p in zip(xy_mm, probs, strict=True)
    ]
    return {"type": "Multiple points", "points": points, "version": {"major": 1, "minor": 0}}


def classification_list(confidences: np.ndarray, *, threshold: float) -> list[dict[str, Any]]:
    """The Track 2 list of one stack, one item per patch in page order, from P(atypical) per patch:
    `{"class": "atypical" if p >= threshold else "normal", "confidence": p}` (a JSON float, always)."""
    probs = np.asarray(confidences, dtype=np.float64)
    return [{"class": ATYPICAL if p >= threshold else NORMAL, "confidence": float(p)} for p in probs]


def output_name(case: str) -> str:
    """<stem>.json for case "001.tiff" -> "001.json"."""
    return Path(case).stem + ".json"


def write_json(path: Path, doc: Any) -> None:
    """Write atomically, so that a killed run never leaves a half-written file behind."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        json.dump(doc, fh, allow_nan=False)
    os.replace(tmp, path)
