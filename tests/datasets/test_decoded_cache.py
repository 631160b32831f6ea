"""The decoded-image cache: decode once, memory-mapped loads, atomic publication, concurrent workers."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tifffile

from worker.datasets.cache import DecodedImageCache
from worker.datasets.errors import DatasetError
from worker.datasets.tiff import decode_rgb


@pytest.fixture
def image(tmp_path: Path) -> tuple[Path, np.ndarray, str]:
    rgb = np.random.default_rng(1).integers(0, 255, (37, 53, 3), dtype=np.uint8)
    path = tmp_path / "img.tiff"
    tifffile.imwrite(path, rgb, photometric="rgb")
    return path, rgb, hashlib.sha256(path.read_bytes()).hexdigest()


class CountingDecoder:
    def __init__(self, delay: float = 0.0) -> None:
        self.calls = 0
        self.delay = delay
        self._lock = threading.Lock()

    def __call__(self, path: Path) -> np.ndarray:
        with self._lock:
            self.calls += 1
        time.sleep(self.delay)
        return decode_rgb(path)


def test_decodes_once_then_loads_a_read_only_memmap(tmp_path: Path, image: tuple[Path, np.ndarray, str]) -> None:
    path, rgb, sha = image
    decoder = CountingDecoder()
    cache = DecodedImageCache(tmp_path / "cache", decoder=decoder)
    first = cache.load(path, sha256=sha)
    second = DecodedImageCache(tmp_path / "cache", decoder=decoder).load(path)  # key from the file's hash
    assert decoder.calls == 1
    for arr in (first, second):
        assert isinstance(arr, np.memmap)
        assert not arr.flags.writeable
        assert np.array_equal(arr, rgb)
    entry = cache.path_for(sha)
    assert entry == tmp_path / "cache" / sha[:2] / f"{sha}.npy"
    assert sha in cache
    assert not [p for p in entry.parent.iterdir() if p.name.endswith(".tmp")]
    assert (cache.hits, cache.misses) == (0, 1)


def test_concurrent_workers_decode_once(tmp_path: Path, image: tuple[Path, np.ndarray, str]) -> None:
    path, rgb, sha = image
    decoder = CountingDecoder(delay=0.2)
    caches = [DecodedImageCache(tmp_path / "cache", decoder=decoder) for _ in range(6)]
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda c: np.array(c.load(path, sha256=sha)), caches))
    assert decoder.calls == 1
    assert all(np.array_equal(r, rgb) for r in results)


def test_a_damaged_or_half_written_entry_is_rebuilt(tmp_path: Path, image: tuple[Path, np.ndarray, str]) -> None:
    path, rgb, sha = image
    cache = DecodedImageCache(tmp_path / "cache")
    entry = cache.path_for(sha)
    entry.parent.mkdir(parents=True)
    (entry.parent / f".{sha[:16]}.stale.npy.tmp").write_bytes(b"half")  # a crashed writer's leftover
    entry.write_bytes(b"\x93NUMPY garbage")
    assert np.array_equal(cache.load(path, sha256=sha), rgb)
    assert cache.misses == 1


def test_a_wrong_manifest_hash_is_refused(tmp_path: Path, image: tuple[Path, np.ndarray, str]) -> None:
    path = image[0]
    wrong = "0" * 64
    with pytest.raises(DatasetError, match="does not match the manifest"):
        DecodedImageCache(tmp_path / "cache").load(path, sha256=wrong)
    with pytest.raises(ValueError, match="sha256"):
        DecodedImageCache(tmp_path / "cache").path_for("xyz")


def test_prune_keeps_the_most_recent(tmp_path: Path) -> None:
    cache = DecodedImageCache(tmp_path / "cache")
    shas = []
    for i in range(3):
        p = tmp_path / f"{i}.tiff"
        tifffile.imwrite(p, np.full((20, 20, 3), i, np.uint8), photometric="rgb")
        sha = hashlib.sha256(p.read_bytes()).hexdigest()
        cache.load(p, sha256=sha)
        os.utime(cache.path_for(sha), (1000 + i, 1000 + i))
        shas.append(sha)
    size = cache.path_for(shas[0]).stat().st_size
    assert cache.prune(max_bytes=size) == 2
    assert [s in cache for s in shas] == [False, False, True]


def test_warm_decodes_each_image_of_a_test_set_once(tmp_path: Path) -> None:
    from worker.datasets.synth import generate_test_set

    test_set = generate_test_set(tmp_path / "set", scanners=2, cases_per_scanner=1, size=(96, 80), seed=0)
    cache = DecodedImageCache(tmp_path / "cache")
    assert cache.warm(test_set) == 2
    assert cache.warm(test_set) == 0
    for case in test_set.cases:
        assert case.sha256 in cache
        assert np.array_equal(
            cache.load(test_set.image_path(case), sha256=case.sha256), decode_rgb(test_set.image_path(case))
        )
