"""Input images for the runtime: which cases to run and how to get their pixels. No torch here.

Inputs are either a test-set manifest (manifest.json, see worker/datasets/manifest.py for the layout; its
spacing_mm wins over the TIFF tags) or a directory of .tif/.tiff files whose spacing comes from the TIFF
resolution tags. Pixels come from the decoded-image cache when one is given and holds the image's sha256,
else from the TIFF itself.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

_TIFF_SUFFIXES = (".tif", ".tiff")
_MM_PER_UNIT = {2: 25.4, 3: 10.0}  # TIFF ResolutionUnit: 2 = inch, 3 = centimetre


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
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in _TIFF_SUFFIXES and p.is_file())
    if not files:
        raise InputError(f"{path}: holds no .tif or .tiff images")
    specs = []
    for file in files:
        with tifffile.TiffFile(file) as tif:
            spacing = tiff_spacing_mm(tif)
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


def tiff_spacing_mm(tif: tifffile.TiffFile) -> float | None:
    """Pixel spacing in mm/px from the first page's XResolution and ResolutionUnit tags, if present."""
    page = tif.pages.first
    tags = page.tags
    res = tags.get("XResolution")
    unit = tags.get("ResolutionUnit")
    if res is None:
        return None
    num, den = res.value if isinstance(res.value, tuple) else (res.value, 1)
    per_unit = float(num) / float(den) if den else 0.0
    mm_per_unit = _MM_PER_UNIT.get(int(unit.value) if unit is not None else 2)
    if not per_unit > 0 or mm_per_unit is None:
        return None
    return mm_per_unit / per_unit


class ImageReader:
    """Reads one case's pixels as a C-contiguous (H, W, 3) uint8 array (a read-only memmap from the cache)."""

    def __init__(self, cache_dir: Path | None = None) -> None:
        self.cache_dir = cache_dir

    def read(self, spec: ImageSpec) -> np.ndarray:
        if self.cache_dir is not None and spec.sha256:
            cached = self._from_cache(spec.sha256)
            if cached is not None:
                return cached
        try:
            arr = tifffile.imread(spec.path, key=0)
        except (OSError, ValueError, tifffile.TiffFileError) as exc:
            raise InputError(f"{spec.name}: cannot decode the image ({exc})") from None
        return _as_rgb(arr, spec.name)

    def _from_cache(self, sha256: str) -> np.ndarray | None:
        # The decoded cache stores each image as <sha256>.npy (memory-mappable), see worker/datasets/cache.py.
        assert self.cache_dir is not None
        path = self.cache_dir / f"{sha256}.npy"
        if not path.is_file():
            return None
        arr = np.load(path, mmap_mode="r")
        return _as_rgb(arr, path.name)


def _as_rgb(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise InputError(f"{name}: expected an RGB image, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise InputError(f"{name}: expected 8-bit pixels, got {arr.dtype}")
    if arr.shape[2] == 4:
        arr = arr[:, :, :3]
    return np.ascontiguousarray(arr) if not arr.flags.c_contiguous else arr
