"""A small MIDOG 2025 Track 2 test set on disk for the service and worker tests: multi-page TIFF stacks, the
manifest with task "classification", and the official ground truth; plus outputs of a made-up classifier."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from worker.datasets.manifest import Case, Manifest, sha256_file

# stack -> (tumour domain, labels); domain 2 has no atypical figure at all
STACKS: dict[str, tuple[int, list[str]]] = {
    "stack_1.tiff": (1, ["normal", "atypical", "normal", "normal"]),
    "stack_2.tiff": (1, ["atypical", "atypical", "normal"]),
    "stack_3.tiff": (2, ["normal", "normal"]),
    "stack_4.tiff": (3, ["atypical", "normal", "normal", "normal", "atypical"]),
}
PATCH = 32


def write_classification_set(root: Path, stacks: dict[str, tuple[int, list[str]]] = STACKS) -> Path:
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "ground-truth").mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    cases = []
    for name, (domain, labels) in stacks.items():
        pages = rng.integers(0, 255, size=(len(labels), PATCH, PATCH, 3), dtype=np.uint8)
        image = root / "images" / name
        tifffile.imwrite(image, pages, photometric="rgb")
        cases.append(
            Case(
                name=name,
                image=f"images/{name}",
                scanner="Scanner A",
                width=PATCH,
                height=PATCH,
                spacing_mm=0.00025,
                sha256=sha256_file(image),
                groups={"scanner": "Scanner A", "tumor domain": str(domain)},
                patches=len(labels),
            )
        )
    manifest = Manifest(name=root.name, cases=tuple(cases), task="classification")
    (root / "manifest.json").write_text(json.dumps(manifest.to_json()))
    truth = [{"image": n, "labels": labels, "tumordomains": [d] * len(labels)} for n, (d, labels) in stacks.items()]
    (root / "ground-truth" / "ground-truth.json").write_text(json.dumps(truth))
    return root


def outputs(flip: int = 0, stacks: dict[str, tuple[int, list[str]]] = STACKS) -> dict[str, list[dict[str, Any]]]:
    """A classifier's outputs: right on every patch but every `flip`-th (counted over all patches, from 1),
    with confidences that rank atypical figures mostly above normal ones."""
    result: dict[str, list[dict[str, Any]]] = {}
    count = 0
    for name, (_domain, labels) in stacks.items():
        items = []
        for label in labels:
            count += 1
            wrong = flip > 0 and count % flip == 0
            said = ("normal" if label == "atypical" else "atypical") if wrong else label
            confidence = (0.8 if said == "atypical" else 0.2) + 0.01 * (count % 7)
            items.append({"class": said, "confidence": round(confidence, 2)})
        result[name] = items
    return result


def write_toy_classifier(out_dir: Path, *, columns: int = 1) -> Path:
    """A classifier archive whose P(atypical) is the red value of each patch's centre pixel (logit
    6 * (red - 0.5), patch_size 32, binary); `columns` 3 makes its output the wrong shape. torch is imported
    here only, so the service tests that import this module do not load it."""
    import torch

    from worker.archives.manifest import ClassifierManifest, ClassifierOutputSpec, PatchInputSpec
    from worker.reference.export import write_archive

    class CentreRed(torch.nn.Module):
        def __init__(self, columns: int) -> None:
            super().__init__()
            self.columns = columns

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            z = 6.0 * (x[:, 0, x.shape[2] // 2, x.shape[3] // 2] - 0.5)
            return z[:, None].repeat(1, self.columns)

    manifest = ClassifierManifest(
        model="model.pt",
        name="toy-classifier",
        input=PatchInputSpec(patch_size=PATCH),
        output=ClassifierOutputSpec(kind="binary", activation="sigmoid"),
    )
    return write_archive(out_dir, CentreRed(columns), manifest)
