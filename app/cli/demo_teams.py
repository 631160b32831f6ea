"""Simulated participant teams of `midog-eval demo`: detectors of known quality whose predictions files are
submitted through the API like any team's, so that the board has enough ranked entries for its ranking
analysis to show overlapping intervals, unstable ranks and differences that are not significant.

A simulated detector is not a model: it is drawn from the test set's own annotations. On the scanner at shift
s (0 for the first, training scanner, 1 for the last), it finds each mitotic figure with probability
`recall(s) = recall - recall_drop * s`, the point displaced by a Gaussian of 1.5 µm; it fires on each imposter
(a non-mitotic look-alike) with probability `imposter_rate(s)`; and it adds Poisson(`false_per_case(s)`)
points at random places. Scores: found figures draw from U(0.5, 1), false alarms from U(0.3, 0.8). Seeded per
team and case: the same set gives the same files.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class SimulatedTeam:
    team: str
    method: str
    recall: float  # on the training scanner
    recall_drop: float  # lost by the most shifted scanner
    imposter_rate: float  # share of imposters detected on the training scanner
    imposter_rise: float  # added by the most shifted scanner
    false_per_case: float  # random false positives per case on every scanner

    @property
    def description(self) -> str:
        return (
            "Simulated team of the demo (not a model): detections drawn from the annotations with recall "
            f"{self.recall:.2f} on scanner-A falling by {self.recall_drop:.2f} towards the last scanner, "
            f"{self.imposter_rate:.2f} of imposters detected (+{self.imposter_rise:.2f}), "
            f"{self.false_per_case:g} random false positives per case."
        )


# Varied on purpose: two near-ties at the top, one that overfits the training scanner, one that trades
# precision for recall, a cautious one and a weak one.
TEAMS = (
    SimulatedTeam("Team Alpine", "stain-augmented RetinaNet", 0.86, 0.08, 0.10, 0.10, 0.6),
    SimulatedTeam("Team Baltic", "Macenko-normalised U-Net", 0.84, 0.06, 0.12, 0.08, 0.8),
    SimulatedTeam("Team Coral", "Faster R-CNN, no augmentation", 0.93, 0.55, 0.08, 0.45, 0.4),
    SimulatedTeam("Team Delta", "high-recall FCOS", 0.95, 0.12, 0.35, 0.20, 1.5),
    SimulatedTeam("Team Ember", "cautious two-stage classifier", 0.66, 0.10, 0.04, 0.04, 0.2),
    SimulatedTeam("Team Fjord", "ensemble of five detectors", 0.88, 0.14, 0.12, 0.12, 0.6),
    SimulatedTeam("Team Glacier", "patch classifier baseline", 0.62, 0.35, 0.30, 0.25, 2.0),
)


def _annotations(test_set: Path) -> dict[str, dict[str, Any]]:
    """Per case: its size in px, spacing, scanner and the pixel centres of figures (category 1) and imposters."""
    manifest = json.loads((test_set / "manifest.json").read_text(encoding="utf-8"))
    coco = json.loads((test_set / "ground-truth" / "MIDOG.json").read_text(encoding="utf-8"))
    by_id = {image["id"]: image["file_name"] for image in coco["images"]}
    cases = {
        c["name"]: {
            "width": c["width"],
            "height": c["height"],
            "spacing_mm": c["spacing_mm"],
            "scanner": c["groups"]["scanner"],
            "figures": [],
            "imposters": [],
        }
        for c in manifest["cases"]
    }
    for a in coco["annotations"]:
        x0, y0, x1, y1 = a["bbox"]
        key = "figures" if a["category_id"] == 1 else "imposters"
        cases[by_id[a["image_id"]]][key].append(((x0 + x1) / 2, (y0 + y1) / 2))
    return cases


def simulate(team: SimulatedTeam, test_set: Path, *, seed: int = 0) -> dict[str, Any]:
    """The team's predictions for every case of `test_set`, as an official "Multiple points" document."""
    cases = _annotations(test_set)
    scanners = sorted({c["scanner"] for c in cases.values()})
    shift = {name: i / max(1, len(scanners) - 1) for i, name in enumerate(scanners)}
    doc: dict[str, Any] = {}
    for name, case in sorted(cases.items()):
        rng = np.random.default_rng([seed, zlib.crc32(team.team.encode()), zlib.crc32(name.encode())])
        s = shift[case["scanner"]]
        mm = case["spacing_mm"]
        points: list[tuple[float, float, float]] = []
        for x, y in case["figures"]:
            if rng.random() < team.recall - team.recall_drop * s:
                dx, dy = rng.normal(0.0, 0.0015, 2)
                points.append((x * mm + dx, y * mm + dy, rng.uniform(0.5, 1.0)))
        for x, y in case["imposters"]:
            if rng.random() < team.imposter_rate + team.imposter_rise * s:
                points.append((x * mm, y * mm, rng.uniform(0.3, 0.8)))
        for _ in range(rng.poisson(team.false_per_case)):
            x, y = rng.uniform(0, case["width"]), rng.uniform(0, case["height"])
            points.append((x * mm, y * mm, rng.uniform(0.3, 0.8)))
        doc[name] = {
            "type": "Multiple points",
            "points": [
                {"point": [round(px, 6), round(py, 6), 0], "probability": round(float(p), 4)} for px, py, p in points
            ],
            "version": {"major": 1, "minor": 0},
        }
    return doc


def write_predictions(team: SimulatedTeam, test_set: Path, out_dir: Path, *, seed: int = 0) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{team.team.lower().replace(' ', '-')}.json"
    path.write_text(json.dumps(simulate(team, test_set, seed=seed)), encoding="utf-8")
    return path
