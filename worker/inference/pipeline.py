"""Runs one archive over many images: decoding overlapped with compute, then one JSON file per image.

Loader threads decode (or map from the decoded cache) upcoming images and copy them into reusable pinned
host buffers while the device works on the current one; the main thread issues non-blocking host-to-device
copies, enqueues image k+1's forward passes before it waits for image k's peaks, and writes the results.
A pinned buffer goes back to the pool with a CUDA event recorded after its copy, and a loader waits on that
event before refilling it, so a buffer is never overwritten while a copy from it may still be running.
"""

from __future__ import annotations

import queue
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from worker.inference.detector import Detector, Pending
from worker.inference.images import ImageReader, ImageSpec, InputError
from worker.inference.output import multiple_points, output_name, write_json


@dataclass(frozen=True)
class RunStats:
    images: int
    tiles: int
    detections: int
    seconds: float
    load_wait_seconds: float  # time the main thread waited for a loader: decode not hidden behind compute
    device: str

    @property
    def tiles_per_second(self) -> float:
        return self.tiles / self.seconds if self.seconds > 0 else 0.0


class _BufferPool:
    """Reusable host staging buffers (pinned when copying to a GPU), each with the event of its last copy."""

    def __init__(self, size: int, pinned: bool) -> None:
        self.pinned = pinned
        self._free: queue.Queue[tuple[torch.Tensor, torch.cuda.Event | None]] = queue.Queue()
        for _ in range(size):
            self._free.put((torch.empty(0, dtype=torch.uint8), None))

    def take(self, nbytes: int) -> torch.Tensor:
        """A free buffer of at least `nbytes`, once the last copy out of it has finished."""
        buf, event = self._free.get()
        if event is not None:
            event.synchronize()
        if buf.numel() < nbytes:
            buf = torch.empty(nbytes, dtype=torch.uint8, pin_memory=self.pinned)
        return buf

    def release(self, buf: torch.Tensor, event: torch.cuda.Event | None) -> None:
        self._free.put((buf, event))


def run_archive(
    detector: Detector,
    images: Sequence[ImageSpec],
    output: Path,
    *,
    cache_dir: Path | None = None,
    loaders: int = 2,
    features_output: Path | None = None,
) -> RunStats:
    """Detect on every image and write <output>/<stem>.json for each; returns timing figures. With
    `features_output` and an archive that declares features, also <features_output>/<stem>.json holding
    {"features": [...]}: the case's features averaged over its tiles."""
    names = [output_name(spec.name) for spec in images]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError(f"cases {duplicates[0]!r}: two images would write the same output file")
    output.mkdir(parents=True, exist_ok=True)
    if detector.manifest.features_method is None:
        features_output = None
    elif features_output is not None:
        features_output.mkdir(parents=True, exist_ok=True)
    device = detector.device
    cuda = device.type == "cuda"
    reader = ImageReader(cache_dir)
    lookahead = max(1, loaders) + 1
    pool = _BufferPool(lookahead + 2, pinned=cuda)

    def load(spec: ImageSpec) -> tuple[ImageSpec, torch.Tensor, tuple[int, ...]]:
        taken: list[torch.Tensor] = []

        def allocate(shape: tuple[int, int, int]) -> np.ndarray:
            n = shape[0] * shape[1] * shape[2]
            if not taken:
                taken.append(pool.take(n))
            elif taken[0].numel() < n:  # a second call after a failed direct decode
                taken[0] = torch.empty(n, dtype=torch.uint8, pin_memory=pool.pinned)
            return taken[0][:n].numpy().reshape(shape)

        try:
            arr = reader.read_into(spec, allocate)
        except BaseException:
            if taken:
                pool.release(taken[0], None)
            raise
        return spec, taken[0], arr.shape

    threshold = detector.manifest.output.threshold
    tiles = detections = 0
    wait = 0.0
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, loaders), thread_name_prefix="loader") as executor:
        futures: deque[Future[tuple[ImageSpec, torch.Tensor, tuple[int, ...]]]] = deque()
        todo = iter(images)
        for spec in todo:
            futures.append(executor.submit(load, spec))
            if len(futures) >= lookahead:
                break
        previous: tuple[ImageSpec, Pending] | None = None
        while futures:
            t0 = time.perf_counter()
            spec, buf, shape = futures.popleft().result()
            wait += time.perf_counter() - t0
            nxt = next(todo, None)
            if nxt is not None:
                futures.append(executor.submit(load, nxt))
            host = buf[: int(np.prod(shape))].view(shape)
            if cuda:
                on_device = host.to(device, non_blocking=True)
                event = torch.cuda.Event()  # type: ignore[no-untyped-call]
                event.record()
                pool.release(buf, event)
                pending = detector.start(on_device.permute(2, 0, 1), spec.spacing_mm)
            else:
                pending = detector.start(host.permute(2, 0, 1), spec.spacing_mm)
                pool.release(buf, None)  # on the CPU, start() has already copied what it needs
            tiles += pending.grid.count
            if previous is not None:
                detections += _write(detector, previous, output, threshold, features_output)
            previous = (spec, pending)
        if previous is not None:
            detections += _write(detector, previous, output, threshold, features_output)
    if cuda:
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    return RunStats(len(images), tiles, detections, seconds, wait, str(device))


def _write(
    detector: Detector, item: tuple[ImageSpec, Pending], output: Path, threshold: float, features: Path | None
) -> int:
    spec, pending = item
    found = detector.finish(pending)
    doc = multiple_points(found.xy_px, found.scores, spacing_mm=spec.spacing_mm, threshold=threshold)
    write_json(output / output_name(spec.name), doc)
    if features is not None and found.features is not None:
        write_json(features / output_name(spec.name), {"features": [float(v) for v in found.features]})
    return len(found.scores)
