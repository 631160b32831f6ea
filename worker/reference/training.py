"""Training and calibration of the reference detectors on synthetic cases of ONE scanner.

The CNN learns a CenterNet-style heatmap (focal loss on Gaussian peaks at mitotic figures; imposters are
plain negatives) from random crops, half of them centred near a figure, with flips and 90-degree turns. By
default that is the only augmentation, with normalisation by the training scanner's statistics, so the
scanner shift stays visible; `augment=True` adds stain, tone, blur and noise augmentation
(`augment_appearance`), the usual defence against scanner shift. Both detectors get their decision threshold
(and the classical one its bias) by maximising F1 on held-out cases of the training scanner, detected by the
real runtime and scored by the scoring core. Everything runs on the CPU in a few minutes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from worker.archives.manifest import ArchiveManifest
from worker.datasets.synth import RenderedCase, render_case, scanner_profile
from worker.evaluation.metrics import evaluate
from worker.evaluation.types import CasePredictions, GroundTruth
from worker.inference.detector import Detector
from worker.reference.classical import ClassicalDetector, classical_manifest
from worker.reference.cnn import STRIDE, HeatmapCNN, cnn_manifest
from worker.reference.export import write_archive

_SEED_TAG = 0x7EA1  # training/calibration cases never coincide with generate_test_set's (seed, scanner, case)
Progress = Callable[[str], None]


@dataclass(frozen=True)
class TrainConfig:
    scanner: int = 0
    train_cases: int = 16
    calib_cases: int = 4
    size: tuple[int, int] = (1024, 768)
    steps: int = 300
    batch: int = 16
    crop: int = 96
    lr: float = 3e-3
    seed: int = 0
    time_budget_s: float = 600.0  # training stops after this many seconds even if steps remain
    threads: int = 2
    log_every: int = 50
    augment: bool = False  # stain, tone, blur and noise augmentation of every crop


def render_cases(scanner: int, count: int, *, size: tuple[int, int], seed: int, offset: int = 0) -> list[RenderedCase]:
    return [render_case(scanner, size=size, seed=[_SEED_TAG, seed, scanner, offset + k]) for k in range(count)]


def _targets(centres: np.ndarray, x0: int, y0: int, crop: int, sigma: float = 1.5) -> torch.Tensor:
    """Gaussian peaks (value 1 at the cell nearest each centre) on the stride-4 grid of a crop at (x0, y0)."""
    cells = crop // STRIDE
    target = torch.zeros(cells, cells)
    grid = torch.arange(cells, dtype=torch.float32)
    for cx, cy in centres:
        # cell c covers pixels [c*s, (c+1)*s): its centre is c*s + (s-1)/2, the runtime's convention
        gx = round((cx - x0 - (STRIDE - 1) / 2) / STRIDE)
        gy = round((cy - y0 - (STRIDE - 1) / 2) / STRIDE)
        if -3 <= gx < cells + 3 and -3 <= gy < cells + 3:
            g = torch.exp(-((grid[None, :] - gx) ** 2 + (grid[:, None] - gy) ** 2) / (2 * sigma**2))
            target = torch.maximum(target, g)
    return target


def _focal_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss, averaged over the positive cells."""
    p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    pos = target.eq(1.0)
    pos_loss = -((1 - p) ** 2) * torch.log(p) * pos
    neg_loss = -((1 - target) ** 4) * p**2 * torch.log(1 - p) * (~pos)
    return (pos_loss.sum() + neg_loss.sum()) / pos.sum().clamp(min=1)


class _CropSampler:
    def __init__(self, cases: Sequence[RenderedCase], crop: int, rng: np.random.Generator) -> None:
        self.images = [torch.from_numpy(c.rgb).permute(2, 0, 1).contiguous() for c in cases]
        self.cases = cases
        self.crop = crop
        self.rng = rng
        self.with_mitoses = [i for i, c in enumerate(cases) if len(c.mitoses)]
        self.with_imposters = [i for i, c in enumerate(cases) if len(c.imposters)]

    def sample(self) -> tuple[torch.Tensor, torch.Tensor]:
        rng, crop = self.rng, self.crop
        u = rng.random()
        if u < 0.5 and self.with_mitoses:
            i = int(rng.choice(self.with_mitoses))
            cx, cy = self.cases[i].mitoses[rng.integers(len(self.cases[i].mitoses))]
        elif u < 0.7 and self.with_imposters:
            i = int(rng.choice(self.with_imposters))
            cx, cy = self.cases[i].imposters[rng.integers(len(self.cases[i].imposters))]
        else:
            i = int(rng.integers(len(self.cases)))
            _, h, w = self.images[i].shape
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        image = self.images[i]
        _, h, w = image.shape
        jitter = rng.uniform(-crop / 3, crop / 3, 2)
        x0 = int(np.clip(round(cx - crop / 2 + jitter[0]), 0, w - crop))
        y0 = int(np.clip(round(cy - crop / 2 + jitter[1]), 0, h - crop))
        x = image[:, y0 : y0 + crop, x0 : x0 + crop]
        t = _targets(self.cases[i].mitoses, x0, y0, crop)
        k = int(rng.integers(4))
        x, t = torch.rot90(x, k, (1, 2)), torch.rot90(t, k, (0, 1))
        if rng.random() < 0.5:
            x, t = x.flip(2), t.flip(1)
        return x, t


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (3, H, W) with reflected borders; sigma in pixels (< 0.3: unchanged)."""
    if sigma < 0.3:
        return x
    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    padded = torch.nn.functional.pad(x[None], (radius, radius, radius, radius), mode="reflect")
    rows = torch.nn.functional.conv2d(padded, kernel.view(1, 1, 1, -1).repeat(3, 1, 1, 1), groups=3)
    return torch.nn.functional.conv2d(rows, kernel.view(1, 1, -1, 1).repeat(3, 1, 1, 1), groups=3)[0]


def augment_appearance(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """A random scanner appearance for one crop (3, H, W) on the 0-1 scale: optical density scaled per channel
    (stain colour and strength), white balance, gamma, contrast and brightness, Gaussian blur up to 1.2 px and
    noise up to 4/255. Milder than the most shifted synthetic scanner on purpose: augmentation that covers
    every test scanner would hide the shift the demo is meant to show."""
    density = -torch.log(x.clamp(min=1.0 / 255.0))
    scale = torch.tensor(rng.uniform(0.75, 1.2, 3) * rng.uniform(0.9, 1.1), dtype=torch.float32).view(3, 1, 1)
    white = torch.tensor(rng.uniform(0.92, 1.0, 3), dtype=torch.float32).view(3, 1, 1)
    y = white * torch.exp(-density * scale)
    y = _gaussian_blur(y, float(rng.uniform(0.0, 1.2)))
    y = y.clamp(0.0, 1.0) ** float(rng.uniform(0.9, 1.15))
    y = (y - 0.5) * float(rng.uniform(0.85, 1.1)) + 0.5 + float(rng.uniform(-0.03, 0.04))
    noise = torch.from_numpy(rng.normal(0.0, rng.uniform(0.0, 4.0) / 255.0, tuple(y.shape)).astype(np.float32))
    return (y + noise).clamp(0.0, 1.0)


def channel_stats(cases: Sequence[RenderedCase]) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Per-channel mean and std of the training images on the 0-1 scale."""
    pixels = np.concatenate([c.rgb.reshape(-1, 3)[::7] for c in cases]).astype(np.float64) / 255.0
    m, s = pixels.mean(axis=0), pixels.std(axis=0)
    return (float(m[0]), float(m[1]), float(m[2])), (float(s[0]), float(s[1]), float(s[2]))


def train_cnn(
    cases: Sequence[RenderedCase], config: TrainConfig, progress: Progress | None = None
) -> tuple[HeatmapCNN, tuple[float, float, float], tuple[float, float, float]]:
    """Train the CNN on `cases`; returns the model (eval mode) and the normalisation it was trained with."""
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    rng = np.random.default_rng([_SEED_TAG, config.seed])
    mean, std = channel_stats(cases)
    mean_t = torch.tensor(mean).view(1, 3, 1, 1)
    std_t = torch.tensor(std).view(1, 3, 1, 1)
    sampler = _CropSampler(cases, config.crop, rng)
    model = HeatmapCNN()
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=1e-4)
    start = time.monotonic()
    step = 0
    # The schedule follows whichever runs out first, steps or seconds, so that training always ends with the
    # learning rate annealed, however busy the machine is.
    while True:
        done = max(step / config.steps, (time.monotonic() - start) / config.time_budget_s)
        if done >= 1.0:
            break
        lr = config.lr * (done / 0.1 if done < 0.1 else 0.5 * (1 + math.cos(math.pi * (done - 0.1) / 0.9)))
        for group in opt.param_groups:
            group["lr"] = lr
        xs, ts = zip(*(sampler.sample() for _ in range(config.batch)), strict=True)
        crops = [c.to(torch.float32) / 255.0 for c in xs]
        if config.augment:
            crops = [augment_appearance(c, rng) for c in crops]
        x = (torch.stack(crops) - mean_t) / std_t
        loss = _focal_loss(model(x)[:, 0], torch.stack(ts))
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        if progress is not None and step % config.log_every == 0:
            progress(f"step {step + 1}  loss {loss.item():.3f}  lr {lr:.2e}  {time.monotonic() - start:.0f}s")
        step += 1
    if progress is not None:
        progress(f"trained {step} steps in {time.monotonic() - start:.0f}s")
    return model.eval(), mean, std


def detect_cases(
    archive: Path, cases: Sequence[RenderedCase], spacing_mm: float
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Run the real runtime (CPU) on in-memory cases: (xy_px, scores) per case."""
    detector = Detector(archive, device=torch.device("cpu"))
    return [
        (d.xy_px, d.scores)
        for d in (detector.detect(torch.from_numpy(c.rgb).permute(2, 0, 1), spacing_mm) for c in cases)
    ]


def best_threshold(
    found: Sequence[tuple[np.ndarray, np.ndarray]], cases: Sequence[RenderedCase], spacing_mm: float
) -> tuple[float, float]:
    """The score threshold with the highest micro F1 (scoring core, midog2022 rules): (threshold, F1)."""
    names = [f"{i:03d}" for i in range(len(cases))]
    gt = GroundTruth(
        cases={
            n: np.column_stack([c.mitoses * spacing_mm, np.zeros(len(c.mitoses))])
            for n, c in zip(names, cases, strict=True)
        }
    )
    all_scores = np.concatenate([s for _, s in found]) if found else np.zeros(0)
    candidates = np.unique(np.quantile(all_scores, np.linspace(0, 1, 101))) if all_scores.size else np.array([0.5])
    best = (0.5, -1.0)
    for t in candidates:
        preds = {
            n: CasePredictions.from_points(np.column_stack([xy * spacing_mm, np.zeros(len(xy))]), s, s >= t)
            for n, (xy, s) in zip(names, found, strict=True)
        }
        f1 = evaluate(gt, preds).overall.f1
        if f1 > best[1]:
            best = (float(t), f1)
    return best


def _with_threshold(manifest: ArchiveManifest, threshold: float) -> ArchiveManifest:
    out = replace(manifest.output, threshold=threshold, min_score=min(manifest.output.min_score, threshold))
    return replace(manifest, output=out)


def build_cnn_archive(out_dir: Path, config: TrainConfig, progress: Progress | None = None) -> tuple[Path, float]:
    """Render, train, calibrate and write the CNN archive; returns (archive, F1 on the calibration cases)."""
    say = progress or (lambda _msg: None)
    spacing = scanner_profile(config.scanner).spacing_mm
    say(f"rendering {config.train_cases} training cases of scanner {config.scanner}")
    train = render_cases(config.scanner, config.train_cases, size=config.size, seed=config.seed)
    model, mean, std = train_cnn(train, config, progress)
    calib = render_cases(config.scanner, config.calib_cases, size=config.size, seed=config.seed, offset=10_000)
    manifest = cnn_manifest(mean=mean, std=std, threshold=0.5, spacing_mm=spacing)
    archive = write_archive(out_dir, model, manifest)
    threshold, f1 = best_threshold(detect_cases(archive, calib, spacing), calib, spacing)
    say(f"threshold {threshold:.3f} (F1 {f1:.3f} on {len(calib)} held-out cases of the training scanner)")
    write_archive(out_dir, model, _with_threshold(manifest, threshold))
    return archive, f1


def build_classical_archive(out_dir: Path, config: TrainConfig, progress: Progress | None = None) -> tuple[Path, float]:
    """Calibrate the classical detector's bias on the training scanner and write its archive."""
    say = progress or (lambda _msg: None)
    spacing = scanner_profile(config.scanner).spacing_mm
    calib = render_cases(config.scanner, config.calib_cases, size=config.size, seed=config.seed, offset=10_000)
    # Pass 1: gain 1, bias 0, so that score = sigmoid(response) and any response > 0 is a candidate.
    probe = classical_manifest(threshold=0.5, spacing_mm=spacing, min_score=0.5)
    archive = write_archive(out_dir, ClassicalDetector(bias=0.0, gain=1.0), probe)
    found = detect_cases(archive, calib, spacing)
    threshold, f1 = best_threshold(found, calib, spacing)
    bias = math.log(threshold / (1 - threshold)) if 0 < threshold < 1 else 0.0
    # Pass 2: centre the sigmoid on the best response so that 0.5 separates mitotic from non-mitotic.
    write_archive(
        out_dir, ClassicalDetector(bias=bias, gain=10.0), classical_manifest(threshold=0.5, spacing_mm=spacing)
    )
    say(
        f"classical: response threshold {bias:.3f} (F1 {f1:.3f} on {len(calib)} held-out cases of the training scanner)"
    )
    return archive, f1
