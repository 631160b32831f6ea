"""Decoded-image cache benchmark: decoding a 7215 x 5412 region vs loading it from the cache, in one run.

The image is H&E-like content from the synthetic generator (a 2048 x 1536 render tiled to 7215 x 5412), written
as the generator writes TIFFs (uncompressed), as a deflate TIFF and as a PNG. For each file: the median time to
decode it to an H x W x 3 uint8 array, and the median time to load it from the cache (a) opened as the
read-only memory map workers use, and (b) fully read into memory (every pixel copied: the fair comparison with
a decode). Target (docs/performance.md): cached load >= 5x faster than decoding the TIFF. Files stay in the
page cache for both sides. Run: `.venv/bin/python bench/cache.py [--repeats N]` (prints a table; not a test).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from worker.datasets.cache import DecodedImageCache
from worker.datasets.manifest import sha256_file
from worker.datasets.synth import render_case
from worker.datasets.tiff import decode_rgb, write_rgb_tiff

WIDTH, HEIGHT = 7215, 5412


def median_time(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: file in the page cache, code paths loaded
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def make_image() -> np.ndarray:
    tile = render_case(0, size=(2048, 1536), seed=0).rgb
    reps = (-(-HEIGHT // tile.shape[0]), -(-WIDTH // tile.shape[1]), 1)
    return np.ascontiguousarray(np.tile(tile, reps)[:HEIGHT, :WIDTH])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    rgb = make_image()
    with tempfile.TemporaryDirectory(prefix="bench-cache-") as tmp:
        root = Path(tmp)
        files = {
            "TIFF, uncompressed (synth)": root / "region.tiff",
            "TIFF, deflate": root / "region-deflate.tiff",
            "PNG": root / "region.png",
        }
        write_rgb_tiff(files["TIFF, uncompressed (synth)"], rgb, 0.00025)
        tifffile.imwrite(files["TIFF, deflate"], rgb, photometric="rgb", compression="zlib")
        Image.fromarray(rgb).save(files["PNG"], compress_level=6)
        cache = DecodedImageCache(root / "cache")
        rows = []
        for label, path in files.items():
            sha = sha256_file(path)
            cache.load(path, sha256=sha)  # the one decode, done by the first worker
            decode = median_time(lambda p=path: decode_rgb(p), args.repeats)
            opened = median_time(lambda p=path, s=sha: cache.load(p, sha256=s), args.repeats)
            full = median_time(lambda p=path, s=sha: np.array(cache.load(p, sha256=s)), args.repeats)
            rows.append((label, path.stat().st_size / 1e6, decode, opened, full))
        assert np.array_equal(np.asarray(cache.load(files["PNG"])), rgb)
    print(f"decoded-image cache, {WIDTH} x {HEIGHT} x 3 uint8 ({rgb.nbytes / 1e6:.0f} MB), median of {args.repeats}")
    print(
        f"{'source':<28} {'file MB':>8} {'decode s':>9} {'cache mmap s':>13} {'cache full-read s':>18} "
        f"{'decode/full':>12} {'decode/mmap':>12}"
    )
    for label, mb, decode, opened, full in rows:
        print(
            f"{label:<28} {mb:>8.1f} {decode:>9.4f} {opened:>13.5f} {full:>18.4f} "
            f"{decode / full:>11.1f}x {decode / opened:>11.0f}x"
        )
    tiff, deflate = rows[0], rows[1]
    mmap_ratio, full_ratio = tiff[2] / tiff[3], tiff[2] / tiff[4]
    print(
        f"target (cached load >= 5x faster than decoding the TIFF): memory-mapped load {mmap_ratio:.0f}x "
        f"({'meets' if mmap_ratio >= 5 else 'misses'} it); full read into RAM {full_ratio:.1f}x for the "
        f"uncompressed TIFF (its decode is a plain read), {deflate[2] / deflate[4]:.1f}x for the deflate TIFF"
    )


if __name__ == "__main__":
    main()
