"""The demo's second phase: MIDOG 2025 Track 2 (atypical versus normal mitotic figures) on synthetic stacks.

The test set comes from worker.datasets.synth_classification (stacks of patches per scanner and tumour domain).
Baselines, each a predictions file in the official Track 2 format:
- "lobe counter": counts the dark chromatin lobes near the patch centre (haematoxylin by colour deconvolution,
  the darkest 15% of a 48 x 48 px window, connected parts of at least 6 px); atypical figures (multipolar,
  lagging chromosomes, scattered clumps) break into more lobes than normal ones. No training.
- "prior only": every figure "normal" with the share of atypical figures of the training data (0.2) as its
  confidence: balanced accuracy 0.5 and ROC AUC 0.5, the floor every method must beat.
- "reference CNN": the baseline classifier archive of worker.reference.classifier, trained here once (about
  10 s, in a child process, on synthetic stacks of seeds no test set uses) and kept under the demo's data
  directory; submitted as a model archive that a gpu-queue worker runs in the sandbox, or (no sandbox) run here
  by the inference runtime and submitted as its predictions.

Heavy imports happen inside functions (numpy, scipy, torch).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

PRIOR_ATYPICAL = 0.2  # the synthetic sets' default share of atypical figures
LOBE_WINDOW = 48
LOBE_MIN_PIXELS = 6
LOBE_SPLIT = 2  # lobes from which a figure is called atypical


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

    from app.cli.stains import RUIFROK_HE  # the blob detector's stain vectors

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


_BUILD_CLASSIFIER = (
    "import sys; from pathlib import Path; from worker.reference.classifier import build_classifier_archive; "
    "build_classifier_archive(Path(sys.argv[1]), seed=0, progress=print)"
)


def classifier_archive(work: Path) -> Path:
    """The baseline classifier archive, built once in a child process (torch stays out of the demo's)."""
    from app.settings import child_environment

    archive = work / "reference-classifier"
    if not (archive / "manifest.json").is_file():
        subprocess.run(
            [sys.executable, "-c", _BUILD_CLASSIFIER, str(archive)],
            check=True,
            stdout=subprocess.DEVNULL,
            env={"OMP_NUM_THREADS": "1", **child_environment()},
        )
    return archive


def classifier_predictions(archive: Path, test_set: Path, out_dir: Path) -> Path:
    """Run the trusted baseline classifier with the inference runtime in a child process; one predictions file."""
    from app.settings import child_environment

    out_dir.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "worker.inference.run", "--archive", str(archive), "--images", str(test_set)]
    argv += ["--output", str(out_dir), "--device", "cpu"]
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, env={"OMP_NUM_THREADS": "2", **child_environment()})
    manifest = json.loads((test_set / "manifest.json").read_text(encoding="utf-8"))
    names = {Path(case["name"]).stem: case["name"] for case in manifest["cases"]}
    merged = {names[p.stem]: json.loads(p.read_text()) for p in sorted(out_dir.glob("*.json")) if p.stem in names}
    target = out_dir.with_suffix(".json")
    target.write_text(json.dumps(merged), encoding="utf-8")
    return target


def baselines(
    test_set: Path,
    work: Path,
    baseline: Callable[..., Any],
    progress: Callable[[str], None],
    *,
    models: bool,
    zip_archive: Callable[[Path, Path], Path],
) -> list[Any]:
    """The Track 2 baselines as the demo's Baseline objects (`baseline(**fields)` builds one): the reference CNN
    as a model archive when `models` (zipped by `zip_archive`), else as its predictions file."""
    progress("computing the Track 2 baselines (lobe counter, prior only)")
    items = [
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
    progress("training the Track 2 reference classifier (once, about 10 s)")
    try:
        archive = classifier_archive(work)
        common = {
            "team": "Baseline: reference CNN classifier",
            "method": "Small CNN on optical density (worker/reference)",
            "description": "Trained on synthetic stacks of other seeds, every scanner; run by the inference runtime.",
        }
        if models:
            items.append(baseline(**common, path=zip_archive(archive, work / "reference-classifier.zip"), kind="model"))
        else:
            items.append(baseline(**common, path=classifier_predictions(archive, test_set, work / "classifier-out")))
    except (subprocess.CalledProcessError, OSError) as exc:
        progress(f"skipping the reference classifier: {exc}")
    return items
