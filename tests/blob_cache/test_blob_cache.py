"""The GPU host's content-addressed cache (worker.blob_cache): hits fetch nothing, arrivals are verified and
atomic, damaged files are fetched again, eviction is least recently used under a cap that pinned blobs are
never evicted to keep, and two processes sharing the cache fetch a blob once."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from worker.blob_cache import BlobCache, BlobMismatchError, CacheFullError, read_stream

REPO_ROOT = Path(__file__).resolve().parents[2]
KiB = 1024


def blob(seed: int, size: int = 64 * KiB) -> bytes:
    return (hashlib.sha256(str(seed).encode()).digest() * (size // 32 + 1))[:size]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Source:
    """A fetch function over fixed bytes that counts its calls."""

    def __init__(self, data: bytes, chunk: int = 16 * KiB) -> None:
        self.data = data
        self.chunk = chunk
        self.calls = 0

    def __call__(self) -> Iterator[bytes]:
        self.calls += 1
        for start in range(0, len(self.data), self.chunk):
            yield self.data[start : start + self.chunk]


def get(cache: BlobCache, data: bytes, source: Source | None = None) -> Path:
    with cache.job() as job:
        return job.get(sha(data), len(data), source or Source(data))


def test_a_miss_fetches_once_and_a_hit_fetches_zero_bytes(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path, max_bytes=1 << 20)
    data = blob(1)
    source = Source(data)
    with cache.job() as job:
        path = job.get(sha(data), len(data), source)
        assert path.read_bytes() == data
        assert (job.stats.misses, job.stats.hits, job.stats.bytes_fetched) == (1, 0, len(data))
    with cache.job() as job:
        assert job.get(sha(data).upper(), len(data), source) == path
        assert (job.stats.misses, job.stats.hits, job.stats.bytes_fetched) == (0, 1, 0)
    assert source.calls == 1
    totals = cache.stats()
    assert (totals.misses, totals.hits, totals.bytes_fetched) == (1, 1, len(data))
    assert not os.access(path, os.W_OK) or os.geteuid() == 0  # read-only (root may write anyway)
    assert path.stat().st_mode & 0o222 == 0


@pytest.mark.parametrize(
    ("delivered", "message"),
    [(blob(2), "other content"), (blob(1)[:-1], "bytes, not"), (blob(1) + b"x", "more than")],
    ids=["other-content", "short", "long"],
)
def test_a_wrong_delivery_is_refused_and_never_stored(tmp_path: Path, delivered: bytes, message: str) -> None:
    cache = BlobCache(tmp_path, max_bytes=1 << 20)
    wanted = blob(1)
    with cache.job() as job, pytest.raises(BlobMismatchError, match=message):
        job.get(sha(wanted), len(wanted), Source(delivered))
    assert not cache.blob_path(sha(wanted)).exists()
    assert list((tmp_path / ".tmp").iterdir()) == []
    assert get(cache, wanted).read_bytes() == wanted  # a later good fetch succeeds


def test_a_partial_download_is_never_visible(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path, max_bytes=1 << 20)
    data = blob(3)
    seen_during: list[list[Path]] = []

    def fetch() -> Iterator[bytes]:
        yield data[: len(data) // 2]
        seen_during.append(list((tmp_path / "blobs").rglob("*")))
        raise OSError("connection reset")

    with cache.job() as job, pytest.raises(OSError, match="connection reset"):
        job.get(sha(data), len(data), fetch)
    assert seen_during == [[]]
    assert not cache.blob_path(sha(data)).exists()
    assert list((tmp_path / ".tmp").iterdir()) == []
    assert cache.stats().bytes_fetched == len(data) // 2  # what crossed the wire is counted


def damage(path: Path, *, keep_times: bool) -> None:
    before = path.stat()
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    path.chmod(0o444)
    if keep_times:  # mtime restored; ctime cannot be
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


@pytest.mark.parametrize("keep_times", [True, False])
def test_a_file_changed_on_disk_is_detected_and_fetched_again(tmp_path: Path, keep_times: bool) -> None:
    cache = BlobCache(tmp_path, max_bytes=1 << 20)
    data = blob(4)
    source = Source(data)
    path = get(cache, data, source)
    damage(path, keep_times=keep_times)
    with cache.job() as job:
        assert job.get(sha(data), len(data), source).read_bytes() == data
        assert (job.stats.misses, job.stats.bytes_fetched) == (1, len(data))
    assert source.calls == 2


def test_a_truncated_or_deleted_file_is_fetched_again(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path, max_bytes=1 << 20)
    data = blob(5)
    source = Source(data)
    path = get(cache, data, source)
    path.chmod(0o644)
    path.write_bytes(data[:100])
    assert get(cache, data, source).read_bytes() == data
    path.unlink()
    assert get(cache, data, source).read_bytes() == data
    assert source.calls == 3


def test_a_touched_but_intact_file_is_rehashed_not_fetched(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path, max_bytes=1 << 20)
    data = blob(6)
    source = Source(data)
    path = get(cache, data, source)
    os.utime(path)  # new mtime and ctime, same content
    assert get(cache, data, source) == path
    assert source.calls == 1


def test_damage_a_stat_cannot_show_is_caught_by_the_periodic_full_check(tmp_path: Path) -> None:
    """Media corruption leaves stat alone: simulated by damaging the file and re-recording its stat."""
    data = blob(7)
    source = Source(data)
    path = get(BlobCache(tmp_path, max_bytes=1 << 20), data, source)
    damage(path, keep_times=False)
    record = tmp_path / "records" / f"{sha(data)}.json"
    fresh = json.loads(record.read_text())
    stat = path.stat()
    fresh["stat"] = [stat.st_size, stat.st_ino, stat.st_mtime_ns, stat.st_ctime_ns]
    record.write_text(json.dumps(fresh))
    # within reverify_after_s the stat record is trusted (the documented limit of the cheap check) ...
    assert get(BlobCache(tmp_path, max_bytes=1 << 20), data, source).read_bytes() != data
    # ... a due full check, or verify_every_use, catches it
    assert get(BlobCache(tmp_path, max_bytes=1 << 20, reverify_after_s=0), data, source).read_bytes() == data
    damage(path, keep_times=False)
    assert get(BlobCache(tmp_path, max_bytes=1 << 20, verify_every_use=True), data, source).read_bytes() == data
    assert source.calls == 3


def test_eviction_removes_the_least_recently_used_first(tmp_path: Path) -> None:
    size = 64 * KiB
    cache = BlobCache(tmp_path, max_bytes=3 * size)
    a, b, c, d = (blob(10 + i, size) for i in range(4))
    for data in (a, b, c):
        get(cache, data)
        time.sleep(0.05)  # file times are coarse (a few ms): keep the uses apart
    get(cache, a)  # a is now the most recent; b the least
    time.sleep(0.05)
    get(cache, d)
    present = {data: cache.blob_path(sha(data)).exists() for data in (a, b, c, d)}
    assert present == {a: True, b: False, c: True, d: True}
    assert cache.stats().evictions == 1
    time.sleep(0.05)
    get(cache, b)  # c is the least recent now
    assert not cache.blob_path(sha(c)).exists()
    assert cache.used_bytes() == 3 * size


def test_a_blob_removed_behind_the_caches_back_frees_its_room(tmp_path: Path) -> None:
    """The kept count of bytes held over-counts a vanished file; the scan a full cache makes corrects it
    instead of evicting a blob that still fits."""
    size = 64 * KiB
    cache = BlobCache(tmp_path, max_bytes=3 * size)
    a, b, c, d = (blob(60 + i, size) for i in range(4))
    for data in (a, b, c):
        get(cache, data)
    cache.blob_path(sha(a)).unlink()
    get(cache, d)
    assert [cache.blob_path(sha(x)).exists() for x in (b, c, d)] == [True, True, True]
    assert cache.stats().evictions == 0
    assert json.loads((tmp_path / "usage.json").read_text())["bytes"] == 3 * size == cache.used_bytes()


def test_the_cap_holds_over_many_fetches(tmp_path: Path) -> None:
    cap = 200 * KiB
    cache = BlobCache(tmp_path, max_bytes=cap)
    for i in range(30):
        get(cache, blob(100 + i % 9, (i % 5 + 1) * 16 * KiB))
        assert cache.used_bytes() <= cap
    assert cache.stats().evictions > 0


def test_blobs_pinned_by_the_running_job_are_never_evicted(tmp_path: Path) -> None:
    size = 64 * KiB
    cache = BlobCache(tmp_path, max_bytes=2 * size + 1)
    a, b, c = (blob(20 + i, size) for i in range(3))
    with cache.job() as running:
        running.get(sha(a), size, Source(a))
        running.get(sha(b), size, Source(b))
        with cache.job() as other, pytest.raises(CacheFullError, match="pinned"):
            other.get(sha(c), size, Source(c))
        assert cache.blob_path(sha(a)).read_bytes() == a
        assert cache.blob_path(sha(b)).read_bytes() == b
    get(cache, c)  # the job ended: its blobs may go
    assert cache.used_bytes() <= 2 * size + 1


def test_a_blob_larger_than_the_cap_is_refused_before_fetching(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path, max_bytes=1000)
    data = blob(30, 2000)
    source = Source(data)
    with cache.job() as job, pytest.raises(CacheFullError, match="larger than the cache cap"):
        job.get(sha(data), len(data), source)
    assert source.calls == 0


def test_a_dead_downloads_reservation_is_reclaimed(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path, max_bytes=100 * KiB)
    stale = tmp_path / ".tmp" / f"{'a' * 64}.{90 * KiB}.dead.part"  # nobody holds its lock
    stale.write_bytes(b"half")
    get(cache, blob(31, 64 * KiB))
    assert not stale.exists()


def run_child(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        cwd=REPO_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


CHILD_FETCH = """
    import hashlib, sys, time
    from pathlib import Path
    from worker.blob_cache import BlobCache
    directory, log, marker, wait_for = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
    data = (hashlib.sha256(b"shared").digest() * 32768)[: 1 << 20]
    def fetch():
        with log.open("a") as out:
            out.write("fetch\\n")
        deadline = time.monotonic() + 30
        while not wait_for.exists() and time.monotonic() < deadline:  # the other process is about to get too
            time.sleep(0.01)
        time.sleep(0.2)
        for start in range(0, len(data), 65536):
            yield data[start : start + 65536]
    marker.touch()
    with BlobCache(directory, max_bytes=8 << 20).job() as job:
        path = job.get(hashlib.sha256(data).hexdigest(), len(data), fetch)
        print(path, hashlib.sha256(path.read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest())
"""


def test_two_processes_getting_the_same_blob_fetch_it_once(tmp_path: Path) -> None:
    cache_dir, log = tmp_path / "cache", tmp_path / "fetches.log"
    first = run_child(CHILD_FETCH, str(cache_dir), str(log), str(tmp_path / "one"), str(tmp_path / "two"))
    second = run_child(CHILD_FETCH, str(cache_dir), str(log), str(tmp_path / "two"), str(tmp_path / "one"))
    outputs = [process.communicate(timeout=120) for process in (first, second)]
    assert [process.returncode for process in (first, second)] == [0, 0], outputs
    lines = [out.split() for out, _err in outputs]
    assert lines[0] == lines[1]
    assert lines[0][1] == "True"
    assert log.read_text().splitlines() == ["fetch"]
    totals = BlobCache(cache_dir, max_bytes=8 << 20).stats()
    assert (totals.misses, totals.hits, totals.bytes_fetched) == (1, 1, 1 << 20)


CHILD_PIN = """
    import sys
    from pathlib import Path
    from worker.blob_cache import BlobCache
    directory, digest, size = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    with BlobCache(directory, max_bytes=1 << 30).job() as job:
        job.get(digest, size, lambda: iter(()))  # present already: a hit
        print("pinned", flush=True)
        sys.stdin.readline()
"""


def test_a_blob_pinned_by_another_process_is_not_evicted(tmp_path: Path) -> None:
    size = 64 * KiB
    cache = BlobCache(tmp_path, max_bytes=2 * size)
    a, b, c = (blob(40 + i, size) for i in range(3))
    get(cache, a)
    time.sleep(0.05)
    get(cache, b)
    child = run_child(CHILD_PIN, str(tmp_path), sha(a), str(size))
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "pinned"
        time.sleep(0.05)
        get(cache, b)  # b is the most recently used now, a the least
        time.sleep(0.05)
        get(cache, c)  # but a is pinned elsewhere: b goes
        assert cache.blob_path(sha(a)).exists()
        assert not cache.blob_path(sha(b)).exists()
    finally:
        child.communicate("\n", timeout=60)
    assert child.returncode == 0
    get(cache, b)  # unpinned now: a, the least recently used, goes
    assert not cache.blob_path(sha(a)).exists()


def test_a_stream_opener_becomes_a_fetch_function(tmp_path: Path) -> None:
    data = blob(50, 300 * KiB)
    source = tmp_path / "source.bin"
    source.write_bytes(data)
    cache = BlobCache(tmp_path / "cache", max_bytes=1 << 20)
    with cache.job() as job:
        assert job.get(sha(data), len(data), read_stream(lambda: source.open("rb"))).read_bytes() == data


def test_bad_arguments_name_themselves(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        BlobCache(tmp_path, max_bytes=0)
    with BlobCache(tmp_path, max_bytes=10).job() as job:
        with pytest.raises(ValueError, match="sha256"):
            job.get("abc", 1, lambda: iter(()))
        with pytest.raises(ValueError, match="size"):
            job.get("a" * 64, -1, lambda: iter(()))
