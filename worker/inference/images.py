"""Input images for the runtime: which cases to run and how to get their pixels. No torch here.

Inputs are either a test-set manifest (manifest.json, layout of worker/datasets/manifest.py; its spacing_mm
wins over the TIFF tags) or a directory of .tif/.tiff files whose spacing comes from the TIFF tags. Pixels come
from the decoded-image cache (worker.datasets.cache) when one is given and already holds the image's sha256,
else the image is decoded here. The cache is only read: inside the sandbox it is mounted read-only, so a miss
never tries to fill it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

from worker.datasets.cache import DecodedImageCache
from worker.datasets.errors import DatasetError
from worker.datasets.tiff import TIFF_SUFFIXES, decode_rgb, read_image_info


class InputError(ValueError):
    """The images given to the runtime cannot be used; the message is one line naming the file."""


@dataclass(frozen=True)
class ImageSpec:
    """One case: its name in the ground truth (e.g. "001.tiff"), its file and its pixel spacing."""

    name: str
    path: Path
    spacing_mm: float
    sha256: str | None = None


def list_images(path: Path) -> list[ImageSpec]:
    """The cases under `path`: a manifest.json, a directory holding one, or a directory of TIFF files."""
    if path.is_dir() and (path / "manifest.json").is_file():
        path = path / "manifest.json"
    if path.is_file():
        return _from_manifest(path)
    if not path.is_dir():
        raise InputError(f"{path}: no such file or directory")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in TIFF_SUFFIXES and p.is_file())
    if not files:
        raise InputError(f"{path}: holds no .tif or .tiff images")
    specs = []
    for file in files:
        try:
            spacing = read_image_info(file).spacing_mm
        except DatasetError as exc:
            raise InputError(str(exc)) from None
        if spacing is None:
            raise InputError(f"{file.name}: no resolution tags; give the spacing through a test-set manifest")
        specs.append(ImageSpec(file.name, file, spacing))
    return specs


def _from_manifest(path: Path) -> list[ImageSpec]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        cases = doc["cases"]
        specs = []
        for i, case in enumerate(cases):
            spacing = float(case["spacing_mm"])
            if not (math.isfinite(spacing) and spacing > 0):
                raise InputError(f"{path.name}: cases[{i}].spacing_mm: must be a positive number")
            image = Path(case["image"])
            if image.is_absolute() or ".." in image.parts:
                raise InputError(f"{path.name}: cases[{i}].image: must be a relative path inside the set")
            specs.append(ImageSpec(str(case["name"]), path.parent / image, spacing, case.get("sha256")))
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"{path.name}: not a test-set manifest ({type(exc).__name__}: {exc})") from None
    return specs


class ImageReader:
    """Reads one case's pixels as a C-contiguous (H, W, 3) uint8 array (a read-only memmap from the cache)."""

    def __init__(self, cache_dir: Path | None = None) -> None:
        self.cache = DecodedImageCache(cache_dir) if cache_dir is not None else None

    def read(self, spec: ImageSpec) -> np.ndarray:
        cached = self._cached(spec)
        if cached is not None:
            return cached
        try:
            return decode_rgb(spec.path)
        except DatasetError as exc:
            raise InputError(str(exc)) from None

    def read_into(self, spec: ImageSpec, allocate: Callable[[tuple[int, int, int]], np.ndarray]) -> np.ndarray:
        """The pixels in an array from `allocate((H, W, 3))` (e.g. a view of a pinned staging buffer).

        A plain 8-bit RGB TIFF is decoded straight into it, saving an allocation and a copy of the whole
        image; cache entries and other images are read as by `read` and copied in."""
        cached = self._cached(spec)
        if cached is None and spec.path.suffix.lower() in TIFF_SUFFIXES:
            try:
                with tifffile.TiffFile(spec.path) as tif:
                    page = tif.pages.first
                    shape = tuple(page.shape)
                    if page.dtype == np.uint8 and len(shape) == 3 and shape[2] == 3:
                        out = allocate((int(shape[0]), int(shape[1]), 3))
                        page.asarray(out=out)
                        return out
            except (OSError, ValueError, tifffile.TiffFileError):
                pass  # fall back to the general decoder, which names the problem
        arr = cached if cached is not None else self.read(spec)
        out = allocate((arr.shape[0], arr.shape[1], 3))
        np.copyto(out, arr)  # releases the GIL; reads through a memmap lazily
        return out

    def _cached(self, spec: ImageSpec) -> np.ndarray | None:
        if self.cache is None or not spec.sha256:
            return None
        try:
            if spec.sha256 in self.cache:
                return self.cache.load(spec.path, sha256=spec.sha256)
        except (OSError, ValueError):
            pass  # malformed key or damaged entry in a read-only cache: decode the image instead
        return None
