"""The baseline classifier of MIDOG 2025 Track 2 (atypical versus normal mitotic figures), as a classifier archive.

`AtypicalCNN` maps a batch of (N, 3, 64, 64) RGB patches in 0..255 to one logit of "atypical" per patch:
optical density standardised per patch (so a scanner's stain strength and white balance matter little), half
resolution, four small convolution blocks, mean and max pooling, one linear layer. About 10k parameters.

`build_classifier_archive` renders training stacks with the classification synth
(worker.datasets.synth_classification.render_stack), as many normal as atypical figures, on every scanner
preset and the first tumour domains, under seeds that no test set uses (generated sets key their stacks by
(seed, scanner, domain, stack); these by a tag of their own); trains a fixed number of steps on the CPU with
90-degree turns and flips; and writes the archive: `"task": "classification"`, patch_size 64 with fit "crop"
(the centre of the set's 128-pixel patches), input_range "0-255", output binary with activation "sigmoid",
threshold 0.5. Rules: the same seed gives the same model (fixed thread count, seeded generators, a fixed
number of steps, one thread); under 10 s on two cores. Imports torch, numpy and worker.datasets; never app.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as nnf

from worker.archives.manifest import ClassifierManifest, ClassifierOutputSpec, PatchInputSpec
from worker.datasets.synth_classification import (
    ATYPICAL_FIGURES,
    NORMAL_FIGURES,
    domain_style,
    render_stack,
    scanner_profiles,
)
from worker.reference.export import write_archive

PATCH_SIZE = 64
_SEED_TAG = 0xC1A5  # training stacks are keyed (tag, seed, stack): never a generated test set's key
Progress = Callable[[str], None]


@dataclass(frozen=True)
class ClassifierConfig:
    stacks: int = 24  # of 16 patches each, half of them atypical
    scanners: int = 4  # the synth's scanner presets, taken in turn
    domains: int = 3  # tumour domains, drawn at random per stack
    steps: int = 250
    batch: int = 32
    width: int = 8
    lr: float = 3e-3
    threads: int = 1  # one thread: as quick on two cores, and far quicker when another process holds one


def _block(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class AtypicalCNN(nn.Module):
    """(N, 3, P, P) RGB in 0..255 -> (N,) logits of "atypical" (P divisible by 16; 64 in the archive)."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            *_block(3, w),
            nn.MaxPool2d(2),
            *_block(w, 2 * w),
            nn.MaxPool2d(2),
            *_block(2 * w, 2 * w),
            nn.MaxPool2d(2),
            *_block(2 * w, 4 * w),
        )
        self.head = nn.Linear(8 * w, 1)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Optical density, standardised over each patch, at half resolution."""
        od = -torch.log((x.clamp(0.0, 255.0) + 1.0) / 256.0)
        mean = od.mean(dim=(1, 2, 3), keepdim=True)
        std = od.std(dim=(1, 2, 3), keepdim=True)
        return nnf.avg_pool2d((od - mean) / (std + 1e-3), 2)

    def classify(self, z: torch.Tensor) -> torch.Tensor:
        """Logits from prepared patches (training works on these, prepared once)."""
        h = self.features(z)
        pooled = torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)
        logits: torch.Tensor = self.head(pooled)[:, 0]
        return logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.prepare(x))


def classifier_manifest(*, threshold: float = 0.5) -> ClassifierManifest:
    return ClassifierManifest(
        model="model.pt",
        name="baseline-atypical-cnn",
        input=PatchInputSpec(patch_size=PATCH_SIZE, fit="crop", input_range="0-255"),
        output=ClassifierOutputSpec(kind="binary", activation="sigmoid", threshold=threshold),
        batch_size=64,
    )


def training_patches(config: ClassifierConfig, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rendered training patches (M, 3, 64, 64) uint8 and their labels (M,) float (1 atypical), balanced."""
    rng = np.random.default_rng([_SEED_TAG, seed])
    profiles = scanner_profiles(config.scanners)
    patches: list[np.ndarray] = []
    labels: list[float] = []
    for k in range(config.stacks):
        domain = int(rng.integers(config.domains))
        kinds = [
            str(ATYPICAL_FIGURES[rng.integers(len(ATYPICAL_FIGURES))])
            if page % 2
            else str(NORMAL_FIGURES[rng.integers(len(NORMAL_FIGURES))])
            for page in range(16)
        ]
        stack = render_stack(
            profiles[k % len(profiles)],
            domain_style(domain),
            kinds,
            patch_size=PATCH_SIZE,
            seed=[_SEED_TAG, seed, k],
        )
        patches.append(stack)
        labels += [float(page % 2) for page in range(16)]
    x = torch.from_numpy(np.concatenate(patches)).permute(0, 3, 1, 2).contiguous()
    return x, torch.tensor(labels, dtype=torch.float32)


def train_classifier(
    x: torch.Tensor, y: torch.Tensor, config: ClassifierConfig, *, seed: int, progress: Progress | None = None
) -> AtypicalCNN:
    """Train on patches `x` (uint8) with labels `y`; returns the model in eval mode. Deterministic in `seed`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        model = AtypicalCNN(config.width)
        with torch.no_grad():
            z = model.prepare(x.to(torch.float32))
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=1e-4)
        start = time.monotonic()
        for step in range(config.steps):
            lr = config.lr * 0.5 * (1.0 + float(np.cos(np.pi * step / config.steps)))
            for group in opt.param_groups:
                group["lr"] = lr
            idx = torch.randint(0, z.shape[0], (config.batch,), generator=generator)
            turns = int(torch.randint(0, 4, (1,), generator=generator))
            batch = torch.rot90(z[idx], turns, (2, 3))
            if bool(torch.rand(1, generator=generator) < 0.5):
                batch = batch.flip(3)
            loss = nnf.binary_cross_entropy_with_logits(model.classify(batch.contiguous()), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            if progress is not None and step % 50 == 0:
                progress(f"step {step + 1}/{config.steps}  loss {loss.item():.3f}  {time.monotonic() - start:.1f}s")
        return model.eval()
    finally:
        torch.set_num_threads(threads)


def build_classifier_archive(
    out_dir: Path, *, seed: int = 0, progress: Progress | None = None, config: ClassifierConfig | None = None
) -> Path:
    """Render training stacks, train the baseline classifier and write its archive to `out_dir`; returns it."""
    config = config or ClassifierConfig()
    say = progress or (lambda _message: None)
    start = time.monotonic()
    say(f"rendering {config.stacks} training stacks of 16 patches (seed {seed})")
    x, y = training_patches(config, seed)
    say(f"training the baseline classifier on {len(y)} patches")
    model = train_classifier(x, y, config, seed=seed, progress=progress)
    archive = write_archive(out_dir, model, classifier_manifest())
    say(f"classifier archive written to {archive} in {time.monotonic() - start:.1f}s")
    return archive
