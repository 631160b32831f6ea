"""Representation shift of a submitted detector: how differently its own features see the scanners.

Inputs are one feature vector per case (a model archive that declares features: its feature maps averaged
over each tile, then over the case's tiles) and each case's group (scanner). Two numbers, per the rules:
- Scanner classifier: balanced accuracy of a nearest-class-mean classifier on the standardised vectors,
  each case predicted with itself left out (leave-one-case-out), beside chance (1 / groups). Needs two groups
  with at least two cases each. Near chance: the features do not tell the scanners apart.
- Representation shift (Stacke et al., IEEE JBHI 2021): per channel, the 1-D Wasserstein distance between the
  channel's values on a group's cases and on the reference cases, averaged over the channels. The reference is
  the seen groups (the training scanners) when the phase declares them, otherwise all other groups. Raw
  feature values, as in the paper; they are comparable between the groups of one model, not between models.
  Stacke et al. compare activations over all positions of many patches; here one pooled vector per case.
Neither number predicted the drop in F1 across scanners in the MIDOG 2021 study (Aubreville et al., MIDL
2021): they describe the model's features, not its accuracy.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

MAX_CHANNELS = 4096
MAX_FILE_BYTES = 256 * 1024
CAVEAT = (
    "Describes the model's features, not its accuracy: in the MIDOG 2021 study such shifts did not predict the "
    "drop in F1 on unseen scanners (Aubreville et al., MIDL 2021)."
)


class FeaturesError(ValueError):
    """The features a run wrote cannot be used (the message names the case)."""


def read_case_features(directory: Path, cases: Collection[str]) -> dict[str, npt.NDArray[np.float64]]:
    """`<directory>/<stem>.json` of every case in `cases` ({"features": [numbers]}), all of one length,
    finite, at most MAX_CHANNELS each; written by participant code, so every file is checked."""
    out: dict[str, npt.NDArray[np.float64]] = {}
    length: int | None = None
    for name in sorted(cases):
        path = directory / f"{Path(name).stem}.json"
        if not path.is_file():
            raise FeaturesError(f"case {name}: no features were written")
        if path.stat().st_size > MAX_FILE_BYTES:
            raise FeaturesError(f"case {name}: the features file is larger than {MAX_FILE_BYTES} bytes")
        try:
            values = json.loads(path.read_text(encoding="utf-8"))["features"]
            vector = np.asarray(values, dtype=np.float64)
        except (ValueError, KeyError, TypeError) as exc:
            raise FeaturesError(f"case {name}: the features file is not {{'features': [numbers]}} ({exc})") from None
        if vector.ndim != 1 or not 1 <= len(vector) <= MAX_CHANNELS or not np.isfinite(vector).all():
            raise FeaturesError(f"case {name}: features must be 1 to {MAX_CHANNELS} finite numbers")
        if length is not None and len(vector) != length:
            raise FeaturesError(f"case {name}: {len(vector)} features where the other cases have {length}")
        length = len(vector)
        out[name] = vector
    return out


def scanner_classifier(x: npt.NDArray[np.float64], labels: npt.NDArray[Any]) -> float | None:
    """Leave-one-case-out balanced accuracy of nearest class mean on standardised features; None when a
    group has fewer than two cases or there is a single group."""
    classes, y = np.unique(labels, return_inverse=True)
    counts = np.bincount(y)
    if len(classes) < 2 or counts.min() < 2:
        return None
    spread = x.std(axis=0)
    z = (x - x.mean(axis=0)) / np.where(spread > 0, spread, 1.0)
    sums = np.stack([z[y == k].sum(axis=0) for k in range(len(classes))])
    hits = np.zeros(len(classes))
    for i in range(len(z)):
        means = sums / counts[:, None]
        own = y[i]
        means[own] = (sums[own] - z[i]) / (counts[own] - 1)  # the case leaves its own class mean
        guess = int(np.argmin(((means - z[i]) ** 2).sum(axis=1)))
        hits[own] += guess == own
    return float(np.mean(hits / counts))


def representation_shift(
    features: Mapping[str, npt.NDArray[np.float64]],
    groups: Mapping[str, str],
    *,
    seen: Collection[str] | None = None,
) -> dict[str, Any]:
    """The analysis of the module's docstring as a JSON-ready dict (`available` false, with a reason, when
    there is nothing to compare)."""
    from scipy.stats import wasserstein_distance

    names = sorted(features)
    if not names:
        return {"available": False, "reason": "no case has features"}
    labels = np.array([groups[n] for n in names])
    x = np.stack([features[n] for n in names])
    present = sorted(set(labels.tolist()))
    if len(present) < 2:
        return {"available": False, "reason": "the cases come from a single group"}
    seen_here = sorted(set(seen or ()) & set(present))
    shift: dict[str, Any] = {}
    for group in present:
        if seen_here:
            if group in seen_here:
                continue
            reference = np.isin(labels, seen_here)
        else:
            reference = labels != group
        mine = labels == group
        distances = [wasserstein_distance(x[mine, c], x[reference, c]) for c in range(x.shape[1])]
        shift[group] = {"wasserstein": float(np.mean(distances)), "cases": int(mine.sum())}
    accuracy = scanner_classifier(x, labels)
    return {
        "available": True,
        "cases": len(names),
        "channels": int(x.shape[1]),
        "groups": present,
        "reference": f"seen groups ({', '.join(seen_here)})" if seen_here else "all other groups",
        "scanner_classifier": {
            "balanced_accuracy": accuracy,
            "chance": 1.0 / len(present),
            "method": "nearest class mean on standardised features, each case left out of its class mean",
        },
        "shift": shift,
        "mean_shift": float(np.mean([v["wasserstein"] for v in shift.values()])) if shift else None,
        "caveat": CAVEAT,
    }
