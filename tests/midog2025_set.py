"""A small MIDOG 2025 Track 1 test set for tests: the official 2025 ground truth (tumour domain and roi type per
case) in the worker.datasets layout, and predictions in the official 2025 output format."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# name -> (scanner, tumour domain, roi type, ground-truth points in mm); 1000 x 800 px at 0.00025 mm/px.
CASES: dict[str, tuple[str, int, str, list[list[float]]]] = {
    "001.tiff": ("A", 0, "hotspot", [[0.05, 0.05, 0.0], [0.10, 0.10, 0.0]]),
    "002.tiff": ("A", 1, "challenging", [[0.05, 0.05, 0.0]]),
    "003.tiff": ("B", 1, "random", []),
}
SPACING_MM = 0.00025


def write_midog2025_set(root: Path) -> Path:
    """The set's directory (manifest.json, images/ placeholders, ground-truth/ground-truth.json)."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "ground-truth").mkdir(exist_ok=True)
    cases = []
    for name, (scanner, domain, roi, _) in CASES.items():
        (root / "images" / name).write_bytes(b"II*\x00placeholder")
        cases.append(
            {
                "name": name,
                "image": f"images/{name}",
                "scanner": scanner,
                "groups": {"tumor domain": str(domain), "roi type": roi},
                "width": 1000,
                "height": 800,
                "spacing_mm": SPACING_MM,
                "sha256": None,
            }
        )
    manifest = {"format": "midog-eval/test-set", "version": 1, "name": root.name, "cases": cases}
    (root / "manifest.json").write_text(json.dumps(manifest))
    truth = {
        name: {"annotations": points, "tumor domain": domain, "roi type": roi}
        for name, (_, domain, roi, points) in CASES.items()
    }
    (root / "ground-truth" / "ground-truth.json").write_text(json.dumps(truth))
    return root


def detections(points: dict[str, list[tuple[float, float, float]]]) -> dict[str, Any]:
    """Official 2025 outputs: case -> Multiple points of (x mm, y mm, probability), every point named."""
    return {
        name: {
            "type": "Multiple points",
            "points": [
                {"name": "mitotic figure", "point": [x, y, 0.0], "probability": p} for x, y, p in points.get(name, [])
            ],
            "version": {"major": 1, "minor": 0},
        }
        for name in CASES
    }
