"""Input stacks for a classifier (MIDOG 2025 Track 2): which stacks to run and their patches. No torch here.

A stack is a multi-page TIFF, one RGB patch per page, each centred on one mitotic figure. Inputs are either a
classification test-set manifest (manifest.json with `"task": "classification"`, layout of
worker/datasets/manifest.py: only the listed cases are run, in the listed order, and each case's `patches`, when
given, must be the TIFF's page count) or a directory of .tif/.tiff stacks (all of them, sorted by name). Every
page is read (as the test-set registration counts them); pages must share one size and hold 8-bit samples:
grey is replicated to RGB, alpha is dropped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import numpy.typing as npt
import tifffile

from worker.datasets.tiff import TIFF_SUFFIXES
from worker.inference.images import InputError
from worker.vocabulary import CLASSIFICATION, DETECTION


@dataclass(frozen=True)
class StackSpec:
    """One stack: its name in the ground truth (e.g. "stack_1.tiff"), its file and its page count if known."""

    name: str
    path: Path
    patches: int | None = None


def input_task(path: Path) -> str | None:
    """The task of the test-set manifest at `path` (a manifest.json or a directory holding one): "detection"
    when it names none; None for a directory of images without a manifest or an unreadable manifest."""
    if path.is_dir():
        path = path / "manifest.json"
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    task = doc.get("task", DETECTION) if isinstance(doc, dict) else None
    return task if isinstance(task, str) else None


def list_stacks(path: Path) -> list[StackSpec]:
    """The stacks under `path`: a classification manifest.json, a directory holding one, or of TIFF stacks."""
    if path.is_dir() and (path / "manifest.json").is_file():
        path = path / "manifest.json"
    if path.is_file():
        return _from_manifest(path)
    if not path.is_dir():
        raise InputError(f"{path}: no such file or directory")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in TIFF_SUFFIXES and p.is_file())
    if not files:
        raise InputError(f"{path}: holds no .tif or .tiff stacks")
    return [StackSpec(file.name, file) for file in files]


def _from_manifest(path: Path) -> list[StackSpec]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path.name}: not a readable test-set manifest ({type(exc).__name__})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("cases"), list):
        raise InputError(f"{path.name}: not a test-set manifest (no list of cases)")
    task = doc.get("task", DETECTION)
    if task != CLASSIFICATION:
        raise InputError(f"{path.name}: a {task} test set; this archive is a classifier (task 'classification')")
    specs = []
    for i, case in enumerate(doc["cases"]):
        where = f"{path.name}: cases[{i}]"
        if not isinstance(case, dict) or not isinstance(case.get("name"), str):
            raise InputError(f"{where}: expected an object with a name")
        image = case.get("image") or f"images/{case['name']}"
        rel = PurePosixPath(str(image))
        if rel.is_absolute() or ".." in rel.parts:
            raise InputError(f"{where}.image: must be a relative path inside the set")
        patches = case.get("patches")
        if patches is not None and (isinstance(patches, bool) or not isinstance(patches, int) or patches <= 0):
            raise InputError(f"{where}.patches: must be a positive integer")
        specs.append(StackSpec(case["name"], path.parent.joinpath(*rel.parts), patches))
    return specs


def read_stack(spec: StackSpec) -> npt.NDArray[np.uint8]:
    """Every page of the stack as a C-contiguous (N, H, W, 3) uint8 array."""
    name = spec.name
    try:
        with tifffile.TiffFile(spec.path) as tif:
            pages = [_rgb(np.asarray(page.asarray()), getattr(page, "axes", ""), name) for page in tif.pages]
    except (OSError, ValueError, tifffile.TiffFileError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"{name}: cannot read the stack TIFF ({type(exc).__name__}: {exc})") from None
    if not pages:
        raise InputError(f"{name}: the stack has no pages")
    shapes = sorted({p.shape for p in pages})
    if len(shapes) != 1:
        raise InputError(f"{name}: the pages of a stack must share one size, got {shapes[0]} and {shapes[-1]}")
    if spec.patches is not None and spec.patches != len(pages):
        raise InputError(f"{name}: {len(pages)} pages, but the test-set manifest says {spec.patches} patches")
    return np.ascontiguousarray(np.stack(pages))


def _rgb(arr: npt.NDArray[np.generic], axes: str, name: str) -> npt.NDArray[np.uint8]:
    if arr.ndim == 3 and axes.startswith("S") and arr.shape[0] in (3, 4) and arr.shape[2] not in (3, 4):
        arr = np.moveaxis(arr, 0, 2)  # planar (separate) RGB
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] < 3:
        raise InputError(f"{name}: expected RGB pages, got a page of shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise InputError(f"{name}: expected 8-bit samples, got {arr.dtype}")
    return np.asarray(arr[:, :, :3], dtype=np.uint8)
