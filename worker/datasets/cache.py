"""Decoded-image cache for workers: each image is decoded once into an on-disk .npy keyed by its sha256 and
loaded memory-mapped (read-only) from then on, so repeated evaluations never decode again.

Layout: <root>/<sha256[:2]>/<sha256>.npy (H x W x 3 uint8, C order) and a <sha256>.lock beside it.
Concurrency: writers decode into a temp file in the same directory and publish it with an atomic rename, so a
reader sees either no entry or a complete one; an exclusive flock per key makes concurrent workers (threads or
processes, on one host or over a file system with working flock) wait for the first decoder instead of
decoding the same image again. A damaged entry is detected on load and rebuilt.

Imports numpy and worker.datasets (tifffile/Pillow through worker.datasets.tiff); never torch or the service.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from worker.datasets.errors import DatasetError

if TYPE_CHECKING:
    from worker.datasets.manifest import TestSet

try:  # POSIX; elsewhere concurrent misses may decode twice (still safe: the rename is atomic)
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

Decoder = Callable[[Path], npt.NDArray[np.uint8]]
_SHA = re.compile(r"^[0-9a-f]{64}$")


def _default_decoder(path: Path) -> npt.NDArray[np.uint8]:
    from worker.datasets.tiff import decode_rgb

    return decode_rgb(path)


class DecodedImageCache:
    """`load(path, sha256=...)` returns the decoded image as a read-only memory map."""

    def __init__(self, root: str | os.PathLike[str], *, decoder: Decoder | None = None) -> None:
        self.root = Path(root)
        self._decoder = decoder or _default_decoder
        self.hits = 0
        self.misses = 0

    def path_for(self, sha256: str) -> Path:
        if not _SHA.match(sha256):
            raise ValueError(f"not a lower-case sha256 hex digest: {sha256!r}")
        return self.root / sha256[:2] / f"{sha256}.npy"

    def __contains__(self, sha256: str) -> bool:
        return self.path_for(sha256).is_file()

    def load(self, image: str | os.PathLike[str], *, sha256: str | None = None) -> np.memmap:
        """The decoded image (H x W x 3 uint8, read-only memmap). `sha256` (e.g. from the test-set manifest)
        saves hashing the file on a hit; on a miss the file is hashed anyway and must match it."""
        path = Path(image)
        key = sha256.lower() if sha256 else _sha256_file(path)
        target = self.path_for(key)
        cached = _open(target)
        if cached is not None:
            self.hits += 1
            with contextlib.suppress(OSError):  # recency for prune(); a read-only cache still serves
                os.utime(target)
            return cached
        target.parent.mkdir(parents=True, exist_ok=True)
        with _locked(target.with_suffix(".lock")):
            cached = _open(target)  # another worker may have written it while we waited
            if cached is not None:
                self.hits += 1
                return cached
            self.misses += 1
            actual = _sha256_file(path)
            if actual != key:
                raise DatasetError(f"{path.name}: sha256 {actual[:12]}... does not match the manifest ({key[:12]}...)")
            array = np.ascontiguousarray(self._decoder(path))
            if array.dtype != np.uint8 or array.ndim != 3:
                raise DatasetError(f"{path.name}: decoder returned {array.dtype} {array.shape}, not H x W x C uint8")
            _write_npy_atomic(target, array)
        opened = _open(target)
        if opened is None:  # pragma: no cover - we have just written it
            raise DatasetError(f"{target}: cache entry unreadable right after writing it")
        return opened

    def warm(self, test_set: TestSet, *, progress: Callable[[int, int], None] | None = None) -> int:
        """Decode every image of a test set that is not cached yet (outside the sandbox, before the cache is
        mounted read-only for participant code); returns how many were decoded."""
        cases = [c for c in test_set.cases if c.image is not None]
        before = self.misses
        for i, case in enumerate(cases):
            self.load(test_set.image_path(case), sha256=case.sha256)
            if progress is not None:
                progress(i + 1, len(cases))
        return self.misses - before

    def prune(self, max_bytes: int) -> int:
        """Remove least-recently-modified entries until the cache holds at most `max_bytes`; returns the number
        removed. Entries in use stay valid for their readers (unlinking a mapped file keeps its pages)."""
        entries = sorted((p.stat().st_mtime, p.stat().st_size, p) for p in self.root.glob("??/*.npy") if p.is_file())
        total = sum(size for _, size, _ in entries)
        removed = 0
        for _, size, p in entries:
            if total <= max_bytes:
                break
            p.unlink(missing_ok=True)
            total -= size
            removed += 1
        return removed


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            while block := fh.read(1 << 22):
                digest.update(block)
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such image") from None
    return digest.hexdigest()


def _open(target: Path) -> np.memmap | None:
    """The entry as a read-only memmap, or None when absent; a damaged entry is removed (and then rebuilt)."""
    try:
        arr = np.load(target, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        return None
    except (ValueError, OSError, EOFError):
        _discard(target)
        return None
    if not isinstance(arr, np.memmap) or arr.dtype != np.uint8 or arr.ndim != 3:
        _discard(target)
        return None
    return arr


def _discard(target: Path) -> None:
    with contextlib.suppress(OSError):  # a read-only mount (the sandbox) cannot repair: the caller decodes
        target.unlink(missing_ok=True)


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    if fcntl is None:  # pragma: no cover
        yield
        return
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _write_npy_atomic(target: Path, array: npt.NDArray[np.uint8]) -> None:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem[:16]}.", suffix=".npy.tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.lib.format.write_array(fh, array, allow_pickle=False)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


__all__ = ["DecodedImageCache"]
