"""A classifier archive (MIDOG 2025 Track 2) applied to stacks of patches: one Track 2 list per stack.

`Classifier` loads the archive's TorchScript model once and turns a batch of patches on the device into
P(atypical) per patch: the manifest's fit (centre crop/pad or resize to patch_size), range scaling and
normalisation, a forward pass (bf16 autocast on a GPU when the archive allows it), then the declared
activation (sigmoid of a binary logit, softmax over two classes, or probabilities as they are).

`run_classifier` reads stacks in loader threads (every page; pinned host memory on a GPU) while the device
works, fits each stack's patches on the device as it arrives, and runs the model on batches of
`batch_size` patches taken across stack boundaries. The scores of one flush are copied back (non-blocking,
with an event) while the next flush's forward passes are queued, and every stack whose patches are all
scored is written as `<output>/<stem>.json`: `[{"class": "normal" | "atypical", "confidence": P(atypical)},
...]` in page order, "atypical" when the confidence reaches the manifest's threshold.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as nnf

from worker.archives import MANIFEST_NAME, ArchiveError, ClassifierManifest, validate_archive
from worker.inference.detector import ModelOutputError
from worker.inference.images import InputError
from worker.inference.output import classification_list, output_name, write_json
from worker.inference.scripted import input_affine, load_scripted
from worker.inference.stacks import StackSpec, read_stack

PROBABILITY_SLACK = 1e-4  # activation "none": scores this far outside [0, 1] are rounding, and are clipped
WHITE = 255  # what "crop" pads with, as the stacks are cut (worker.datasets.stacks.cut_patch)


@dataclass(frozen=True)
class ClassifyStats:
    stacks: int
    patches: int
    batches: int
    seconds: float
    load_wait_seconds: float  # time the main thread waited for a loader: reading not hidden behind compute
    device: str

    @property
    def patches_per_second(self) -> float:
        return self.patches / self.seconds if self.seconds > 0 else 0.0


def fit_patches(patches: torch.Tensor, size: int, fit: str) -> torch.Tensor:
    """(N, 3, H, W) uint8 patches -> (N, 3, size, size) float32 in 0..255, by the manifest's rule.

    "crop": the size x size window whose pixel size // 2 is the patch's pixel H // 2 (W // 2), padded with
    white where it reaches outside the patch, so the figure stays on the centre pixel and nothing is
    resampled. "resize": bilinear resampling to size x size (align_corners=False, antialiased when shrinking).
    """
    n, c, h, w = patches.shape
    if h == size and w == size:
        return patches.to(torch.float32)
    if fit == "resize":
        shrink = h > size or w > size
        x = nnf.interpolate(
            patches.to(torch.float32), size=(size, size), mode="bilinear", align_corners=False, antialias=shrink
        )
        return x.clamp_(0.0, 255.0)
    oy, ox = h // 2 - size // 2, w // 2 - size // 2
    out = torch.full((n, c, size, size), float(WHITE), dtype=torch.float32, device=patches.device)
    sy0, sy1 = max(oy, 0), min(oy + size, h)
    sx0, sx1 = max(ox, 0), min(ox + size, w)
    out[:, :, sy0 - oy : sy1 - oy, sx0 - ox : sx1 - ox] = patches[:, :, sy0:sy1, sx0:sx1].to(torch.float32)
    return out


class Classifier:
    """Loads a classifier archive's TorchScript model once and scores patches already on `device`."""

    def __init__(
        self,
        archive: Path,
        *,
        device: torch.device,
        batch_size: int | None = None,
        allow_bf16: bool = True,
        manifest: ClassifierManifest | None = None,
    ) -> None:
        found = manifest or validate_archive(archive)
        if not isinstance(found, ClassifierManifest):
            raise ArchiveError(f"{MANIFEST_NAME}: task: the archive is a {found.task} model, not a classifier")
        self.manifest: ClassifierManifest = found
        m = found
        self.device = device
        self.batch_size = batch_size or m.batch_size or (256 if device.type == "cuda" else 32)
        self.bf16 = m.bf16 and allow_bf16 and device.type == "cuda"
        self.channels_last = device.type == "cuda"
        self.model = load_scripted(archive / m.model, device, channels_last=self.channels_last)
        self._scale, self._shift = input_affine(m.input.input_range, m.input.mean, m.input.std, device)

    def prepare(self, patches: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) uint8 patches of one stack -> the normalised (N, 3, P, P) float input of the model."""
        inp = self.manifest.input
        with torch.inference_mode():
            x = torch.addcmul(self._shift, fit_patches(patches, inp.patch_size, inp.fit), self._scale)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            return x

    def forward(self, x: torch.Tensor) -> object:
        with torch.inference_mode():
            if self.bf16:
                with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16):
                    return self.model(x)
            return self.model(x)

    def scores(self, out: object, count: int) -> torch.Tensor:
        """The model's output for a batch of `count` patches -> (count,) float32 P(atypical), on the device.
        Shapes are checked here (no synchronisation); values when they reach the host (`check_scores`)."""
        spec = self.manifest.output
        if isinstance(out, tuple | list) and out:
            out = out[0]
        if not isinstance(out, torch.Tensor):
            raise ModelOutputError(f"model output: expected a tensor of scores, got {type(out).__name__}")
        shape = tuple(out.shape)
        with torch.inference_mode():
            y = out.to(torch.float32)
            if spec.kind == "binary":
                if not (y.dim() == 1 or (y.dim() == 2 and y.shape[1] == 1)) or y.shape[0] != count:
                    raise ModelOutputError(
                        f"model output: expected ({count},) or ({count}, 1) for output.kind 'binary', got {shape}"
                    )
                y = y.reshape(count)
                return torch.sigmoid(y) if spec.activation == "sigmoid" else y
            if y.dim() != 2 or y.shape[1] != 2 or y.shape[0] != count:
                raise ModelOutputError(f"model output: expected ({count}, 2) for output.kind 'two-class', got {shape}")
            return torch.softmax(y, dim=1)[:, 1] if spec.activation == "softmax" else y[:, 1].contiguous()

    def check_scores(self, scores: np.ndarray, stack: str) -> np.ndarray:
        """Host-side checks of one stack's P(atypical): finite, and in [0, 1] for activation "none"."""
        bad = np.flatnonzero(~np.isfinite(scores))
        if bad.size:
            raise ModelOutputError(f"model output: a non-finite score for page {int(bad[0])} of {stack}")
        if self.manifest.output.activation == "none":
            out = np.flatnonzero((scores < -PROBABILITY_SLACK) | (scores > 1 + PROBABILITY_SLACK))
            if out.size:
                value = float(scores[out[0]])
                raise ModelOutputError(
                    f"model output: P(atypical) {value:.4g} for page {int(out[0])} of {stack} is outside [0, 1] "
                    "(logits need output.activation 'sigmoid' or 'softmax')"
                )
        return np.clip(scores.astype(np.float64), 0.0, 1.0)


def run_classifier(
    classifier: Classifier, stacks: Sequence[StackSpec], output: Path, *, loaders: int = 2
) -> ClassifyStats:
    """Classify every patch of every stack and write <output>/<stem>.json for each; returns timing figures."""
    names = [output_name(spec.name) for spec in stacks]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError(f"cases {duplicates[0]!r}: two stacks would write the same output file")
    output.mkdir(parents=True, exist_ok=True)
    device = classifier.device
    cuda = device.type == "cuda"
    batch = classifier.batch_size
    threshold = classifier.manifest.output.threshold

    def load(spec: StackSpec) -> tuple[StackSpec, torch.Tensor]:
        pages = torch.from_numpy(read_stack(spec))
        return spec, pages.pin_memory() if cuda else pages

    queued: list[torch.Tensor] = []  # prepared patches waiting for a forward pass, in order
    queued_count = 0
    owners: deque[tuple[StackSpec, int]] = deque()  # stacks not yet written, in order, with their patch counts
    pending: list[torch.Tensor] = []  # scores on the device, not yet fetched
    fetched: list[np.ndarray] = []  # scores on the host, of the stacks at the front of `owners`
    batches = patches = 0

    def launch(final: bool) -> list[torch.Tensor]:
        """Forward passes over the queued patches: whole batches, and the rest too when `final`."""
        nonlocal queued_count, batches
        if not queued:
            return []
        out = []
        with torch.inference_mode():
            x = torch.cat(queued) if len(queued) > 1 else queued[0]
            usable = x.shape[0] if final else x.shape[0] // batch * batch
            for first in range(0, usable, batch):
                chunk = x[first : first + batch]
                out.append(classifier.scores(classifier.forward(chunk), chunk.shape[0]))
                batches += 1
            rest = x[usable:]
        queued[:] = [rest] if rest.shape[0] else []
        queued_count = int(rest.shape[0])
        return out

    def start_fetch() -> tuple[torch.Tensor, torch.cuda.Event | None] | None:
        if not pending:
            return None
        with torch.inference_mode():
            scores = torch.cat(pending) if len(pending) > 1 else pending[0]
            if not cuda:
                return scores, None
            host = torch.empty(scores.shape, dtype=torch.float32, pin_memory=True)
            host.copy_(scores, non_blocking=True)
        event = torch.cuda.Event()  # type: ignore[no-untyped-call]
        event.record()
        return host, event

    def finish_fetch(fetch: tuple[torch.Tensor, torch.cuda.Event | None] | None) -> None:
        if fetch is None:
            return
        host, event = fetch
        if event is not None:
            event.synchronize()
        fetched.append(host.numpy().copy())
        everything = np.concatenate(fetched)
        offset = 0
        while owners and offset + owners[0][1] <= everything.shape[0]:
            spec, n = owners.popleft()
            scores = classifier.check_scores(everything[offset : offset + n], spec.name)
            write_json(output / output_name(spec.name), classification_list(scores, threshold=threshold))
            offset += n
        fetched[:] = [everything[offset:]] if offset < everything.shape[0] else []

    def flush(final: bool) -> None:
        nonlocal pending
        fetch = start_fetch()  # before the new forward passes, so waiting for it does not wait for them
        new = launch(final)
        finish_fetch(fetch)
        pending = new

    wait = 0.0
    start = time.perf_counter()
    lookahead = 4 * max(1, loaders)
    with ThreadPoolExecutor(max_workers=max(1, loaders), thread_name_prefix="stack-loader") as executor:
        futures: deque[Future[tuple[StackSpec, torch.Tensor]]] = deque()
        todo = iter(stacks)
        for spec in todo:
            futures.append(executor.submit(load, spec))
            if len(futures) >= lookahead:
                break
        while futures:
            t0 = time.perf_counter()
            spec, pages = futures.popleft().result()
            wait += time.perf_counter() - t0
            nxt = next(todo, None)
            if nxt is not None:
                futures.append(executor.submit(load, nxt))
            on_device = pages.to(device, non_blocking=True) if cuda else pages
            queued.append(classifier.prepare(on_device.permute(0, 3, 1, 2)))
            n = int(pages.shape[0])
            owners.append((spec, n))
            queued_count += n
            patches += n
            if queued_count >= batch:
                flush(final=False)
    flush(final=True)
    flush(final=True)  # fetches the last forward passes' scores
    if owners:
        raise RuntimeError(f"{len(owners)} stacks were never scored")  # a bug here, never the archive's
    seconds = time.perf_counter() - start
    return ClassifyStats(len(stacks), patches, batches, seconds, wait, str(device))
