"""The demo's second phase: MIDOG 2025 Track 2 (atypical versus normal mitotic figures) on synthetic stacks.

The test set comes from worker.datasets.synth_classification (stacks of patches per scanner and tumour domain).
Baselines, each a predictions file in the official Track 2 format:
- "lobe counter": counts the dark chromatin lobes near the patch centre (haematoxylin by colour deconvolution,
  the darkest 15% of a 48 x 48 px window, connected parts of at least 6 px); atypical figures (multipolar,
  lagging chromosomes, scattered clumps) break into more lobes than normal ones. No training.
- "prior only": every figure "normal" with the share of atypical figures of the training data (0.2) as its
  confidence: balanced accuracy 0.5 and ROC AUC 0.5, the floor every method must beat.
- the reference classifier archive of worker.reference, when it can be built here (torch installed): submitted
  as a model archive that a gpu-queue worker runs in the sandbox, or run here and submitted as predictions.

Heavy imports happen inside functions (numpy, scipy, torch).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

PRIOR_ATYPICAL = 0.2  # the synthetic sets' default share of atypical figures
LOBE_WINDOW = 48
LOBE_MIN_PIXELS = 6
LOBE_SPLIT = 2  # lobes from which a figure is called atypical
RUIFROK_HE = ((0.650, 0.704, 0.286), (0.072, 0.990, 0.105), (0.268, 0.570, 0.776))


def build_stack_set(root: Path, *, scanners: int, seed: int) -> Path:
    """The synthetic Track 2 set (once; a second run reuses it): 3 tumour domains, 2 stacks per domain and
    scanner."""
    if not (root / "manifest.json").is_file():
        from worker.datasets.synth_classification import generate_classification_set

        generate_classification_set(root, scanners=scanners, domains=3, stacks_per_domain=2, seed=seed)
    return root


def lobe_count(patch: Any) -> int:
    """Dark chromatin lobes of at least LOBE_MIN_PIXELS px in the central window of one RGB uint8 patch."""
    import numpy as np
    from scipy import ndimage as ndi

    stains = np.array(RUIFROK_HE)
    unmix = np.linalg.inv(stains / np.linalg.norm(stains, axis=1, keepdims=True))
    density = -np.log((patch.astype(np.float64) + 1.0) / 256.0)
    haematoxylin = (density.reshape(-1, 3) @ unmix)[:, 0].reshape(patch.shape[:2])
    cy, cx, half = patch.shape[0] // 2, patch.shape[1] // 2, LOBE_WINDOW // 2
    window = ndi.gaussian_filter(haematoxylin[max(cy - half, 0) : cy + half, max(cx - half, 0) : cx + half], 1.0)
    labels, count = ndi.label(window > np.percentile(window, 85))
    sizes = ndi.sum_labels(np.ones_like(labels), labels, range(1, count + 1))
    return int((np.asarray(sizes) >= LOBE_MIN_PIXELS).sum())


def lobe_predictions(test_set: Path, out: Path) -> Path:
    """The lobe counter's output for every stack: confidence = logistic(1.5 * (lobes - LOBE_SPLIT + 0.5))."""
    from worker.datasets.manifest import TestSet
    from worker.datasets.stacks import read_stack

    doc: dict[str, list[dict[str, Any]]] = {}
    stacks = TestSet.open(test_set)
    for case in stacks.cases:
        items = []
        for patch in read_stack(stacks.image_path(case)):
            p = 1.0 / (1.0 + math.exp(-1.5 * (lobe_count(patch) - LOBE_SPLIT + 0.5)))
            items.append({"class": "atypical" if p >= 0.5 else "normal", "confidence": p})
        doc[case.name] = items
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc), encoding="utf-8")
    return out


def prior_predictions(test_set: Path, out: Path) -> Path:
    """Every figure "normal" with confidence PRIOR_ATYPICAL."""
    from worker.datasets.manifest import TestSet

    cases = TestSet.open(test_set).cases
    doc = {c.name: [{"class": "normal", "confidence": PRIOR_ATYPICAL}] * int(c.patches or 0) for c in cases}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc), encoding="utf-8")
    return out


def baselines(test_set: Path, work: Path, baseline: Callable[..., Any], progress: Callable[[str], None]) -> list[Any]:
    """The Track 2 baselines as the demo's Baseline objects (`baseline(**fields)` builds one)."""
    progress("computing the Track 2 baselines (lobe counter, prior only)")
    return [
        baseline(
            team="Baseline: lobe counter",
            method="Chromatin lobes by colour deconvolution (numpy)",
            description=(
                "Counts the dark haematoxylin lobes of at least 6 px in the central 48 x 48 px window; two or "
                "more lobes: atypical. No training."
            ),
            path=lobe_predictions(test_set, work / "lobe-counter.json"),
        ),
        baseline(
            team="Baseline: prior only",
            method="Every figure normal",
            description="Every figure 'normal' with the training share of atypical figures (0.2) as confidence.",
            path=prior_predictions(test_set, work / "prior-only.json"),
        ),
    ]
