"""A GPU host's content-addressed cache: files kept by SHA-256, fetched once, verified, evicted least recently
used first under a size cap; shared safely by the processes of one host.

    cache = BlobCache(Path("/var/cache/midog"), max_bytes=50 * GiB)
    with cache.job() as job:                       # pins what the job uses until it ends
        path = job.get(sha256, size, fetch)        # fetch() yields the bytes (from the API, a presigned URL...)

Rules:
- A blob arrives in a temp file under `.tmp/`, is checked (exact size, SHA-256), made read-only and renamed
  into `blobs/<aa>/<sha256>`: a partial or wrong download is never visible under its hash.
- One fetch per hash at a time across processes (an exclusive `flock` on `locks/<sha256>.fetch`); a second
  process waiting for it finds the blob present and counts a hit.
- A job pins each blob it got with a shared `flock` on `locks/<sha256>.pin`, released when the job ends or its
  process dies (no stale pins). Eviction takes that lock exclusively without waiting, so it never removes a
  pinned blob.
- The cap is kept at reservation time: under the cache's lock, unpinned blobs are evicted (oldest use first)
  until the blobs plus the downloads in flight plus the new one fit; if pinned blobs leave no room, the fetch
  is refused (`CacheFullError`) rather than the cap broken. A download in flight is a `.tmp/` file named with
  its size and locked by its process; one whose process died is removed.
- Corruption: every blob has a record of the size, inode, mtime and ctime it had when last fully verified.
  Any write to a file changes its ctime, and no system call sets ctime back, so a blob whose stat no longer
  matches is fully re-hashed before it is handed out (and fetched again if it differs). What a stat cannot
  show, media corruption under the file system, is bounded by a full re-hash when the record is older than
  `reverify_after_s` (or on every use with `verify_every_use=True`). A full re-hash costs a read of the
  blob from disk; a GPU evaluation costs minutes, so checking stat on each use and hashing daily is the
  default.
- Counters (hits, misses, bytes fetched, evictions) are kept per job and, summed over all processes, in
  `stats.json`, to which each job adds its own when it ends (under the cache's lock).

Standard library only; must not import app, Celery, SQLAlchemy, FastAPI, pydantic or torch: it runs on GPU
hosts that hold no database and no settings of the control host.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

Fetch = Callable[[], Iterable[bytes]]
_HASH = re.compile(r"[0-9a-f]{64}")
_PART = re.compile(r"(?P<hash>[0-9a-f]{64})\.(?P<size>[0-9]+)\.[0-9a-z_]+\.part")


class BlobCacheError(Exception):
    pass


class BlobMismatchError(BlobCacheError):
    """What a fetch delivered is not the blob asked for (size or hash); nothing was stored."""


class CacheFullError(BlobCacheError):
    """The blob does not fit under the cap beside the blobs pinned by running jobs."""


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    bytes_fetched: int = 0
    evictions: int = 0
    bytes_evicted: int = 0

    def add(self, other: CacheStats) -> None:
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)


class BlobCache:
    """Blobs by SHA-256 under `directory`, at most `max_bytes` of them (downloads in flight included)."""

    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int,
        reverify_after_s: float = 24 * 3600.0,
        verify_every_use: bool = False,
        chunk_bytes: int = 1024 * 1024,
    ) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes {max_bytes}: the cache needs a positive size cap")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.reverify_after_s = reverify_after_s
        self.verify_every_use = verify_every_use
        self.chunk_bytes = chunk_bytes
        for sub in ("blobs", "locks", "records", ".tmp"):
            (self.directory / sub).mkdir(parents=True, exist_ok=True, mode=0o700)

    # -- layout
    def blob_path(self, sha256: str) -> Path:
        return self.directory / "blobs" / sha256[:2] / sha256

    def _record_path(self, sha256: str) -> Path:
        return self.directory / "records" / f"{sha256}.json"

    def _lock_path(self, sha256: str, kind: str) -> Path:
        return self.directory / "locks" / f"{sha256}.{kind}"

    @contextlib.contextmanager
    def _cache_lock(self) -> Iterator[None]:
        with _locked(self.directory / "locks" / "cache", fcntl.LOCK_EX):
            yield

    def job(self) -> Job:
        """A job's view of the cache: blobs it gets stay pinned until it is closed (use it in `with`)."""
        return Job(self)

    def stats(self) -> CacheStats:
        """The counters of every process since the cache was created."""
        try:
            return CacheStats(**json.loads((self.directory / "stats.json").read_text()))
        except (OSError, ValueError, TypeError):
            return CacheStats()

    def used_bytes(self) -> int:
        return sum(size for _path, size, _used in self._blobs())

    # -- internals used by Job
    def _blobs(self) -> list[tuple[Path, int, float]]:
        """(path, size, last use) of every blob; the last use is the mtime of its pin lock file."""
        found = []
        for path in (self.directory / "blobs").glob("*/*"):
            if not _HASH.fullmatch(path.name):
                continue
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                continue
            try:
                used = self._lock_path(path.name, "pin").stat().st_mtime
            except FileNotFoundError:
                used = 0.0
            found.append((path, size, used))
        return found

    def _in_flight(self) -> int:
        """Bytes reserved by live downloads; those whose process died (no lock on the file) are removed."""
        reserved = 0
        for part in (self.directory / ".tmp").iterdir():
            match = _PART.fullmatch(part.name)
            if match is None:
                continue
            try:
                with part.open("rb") as probe:
                    fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except FileNotFoundError:
                continue
            except BlockingIOError:
                reserved += int(match["size"])
                continue
            part.unlink(missing_ok=True)  # we got its lock: its downloader is gone
        return reserved

    def _reserve(self, sha256: str, size: int, stats: CacheStats) -> IO[bytes]:
        """Evict until `size` more bytes fit, then open (and lock) the download's temp file.

        The bytes held are kept in `usage.json` (under the cache's lock), so a fetch that fits costs no scan;
        only one that may not fit lists the blobs, which also corrects the count should files have gone
        missing behind the cache's back (it can only over-count them, which is on the safe side of the cap).
        """
        if size > self.max_bytes:
            raise CacheFullError(f"blob {sha256} of {size} bytes is larger than the cache cap of {self.max_bytes}")
        with self._cache_lock():
            in_flight = self._in_flight()
            used = self._read_usage()
            if used is None or used + in_flight + size > self.max_bytes:
                blobs = sorted(self._blobs(), key=lambda item: item[2])
                used = sum(s for _p, s, _u in blobs)
                for path, blob_size, _used in blobs:
                    if used + in_flight + size <= self.max_bytes:
                        break
                    if path.name != sha256 and self._evict(path):
                        used -= blob_size
                        stats.evictions += 1
                        stats.bytes_evicted += blob_size
                self._write_usage(used)
            if used + in_flight + size > self.max_bytes:
                raise CacheFullError(
                    f"blob {sha256} of {size} bytes does not fit: the cache holds {used + in_flight} bytes pinned "
                    f"by running jobs or in flight, cap {self.max_bytes} (raise the cache size)"
                )
            token = os.urandom(6).hex()
            temp = self.directory / ".tmp" / f"{sha256}.{size}.{token}.part"
            handle = temp.open("xb")
            fcntl.flock(handle, fcntl.LOCK_EX)
            return handle

    def _read_usage(self) -> int | None:
        try:
            return int(json.loads((self.directory / "usage.json").read_text())["bytes"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _write_usage(self, used: int) -> None:
        _write_json(self.directory / "usage.json", {"bytes": max(used, 0)})

    def _adjust_usage(self, delta: int) -> None:
        """Called under the cache's lock; an unknown count stays unknown (the next reservation scans)."""
        used = self._read_usage()
        if used is not None:
            self._write_usage(used + delta)

    def _remove(self, sha256: str) -> None:
        """Remove a damaged blob (the caller holds its fetch lock)."""
        path = self.blob_path(sha256)
        with self._cache_lock():
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                return
            path.unlink(missing_ok=True)
            self._adjust_usage(-size)

    def _evict(self, path: Path) -> bool:
        """Remove an unpinned blob; False when a job holds it."""
        pin = self._lock_path(path.name, "pin")
        with pin.open("a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            path.unlink(missing_ok=True)
            self._record_path(path.name).unlink(missing_ok=True)
            return True

    def _record_stats(self, stats: CacheStats) -> None:
        with self._cache_lock():
            total = self.stats()
            total.add(stats)
            _write_json(self.directory / "stats.json", asdict(total))

    def _verified(self, sha256: str, size: int) -> bool:
        """Whether the blob on disk is intact: its stat record, else (or when due) a full re-hash."""
        path = self.blob_path(sha256)
        try:
            stat = path.stat()
        except FileNotFoundError:
            return False
        if stat.st_size != size:
            return False
        try:
            record = json.loads(self._record_path(sha256).read_text())
            fresh = time.time() - float(record["verified_at"]) < self.reverify_after_s
            same = record["stat"] == _stat_key(stat)
        except (OSError, ValueError, KeyError, TypeError):
            fresh = same = False
        if same and fresh and not self.verify_every_use:
            return True
        if _sha256_file(path, self.chunk_bytes) != sha256:
            return False
        self._write_record(sha256, stat)
        return True

    def _write_record(self, sha256: str, stat: os.stat_result) -> None:
        _write_json(self._record_path(sha256), {"stat": _stat_key(stat), "verified_at": time.time()})

    def _download(self, sha256: str, size: int, fetch: Fetch, stats: CacheStats) -> None:
        """Fetch, check and rename into place (the caller holds the blob's fetch lock)."""
        handle = self._reserve(sha256, size, stats)
        temp = Path(handle.name)
        try:
            digest = hashlib.sha256()
            received = 0
            with handle:
                try:
                    for chunk in fetch():
                        received += len(chunk)
                        if received > size:
                            raise BlobMismatchError(f"blob {sha256}: the fetch delivered more than its {size} bytes")
                        digest.update(chunk)
                        handle.write(chunk)
                finally:
                    stats.bytes_fetched += received
                handle.flush()
                os.fsync(handle.fileno())
                if received != size:
                    raise BlobMismatchError(f"blob {sha256}: the fetch delivered {received} bytes, not {size}")
                if digest.hexdigest() != sha256:
                    raise BlobMismatchError(
                        f"blob {sha256}: the fetch delivered other content (sha256 {digest.hexdigest()})"
                    )
                temp.chmod(0o444)
                target = self.blob_path(sha256)
                target.parent.mkdir(exist_ok=True, mode=0o700)
                with self._cache_lock():  # from reserved (in flight) to held, in one step for other processes
                    os.replace(temp, target)
                    self._adjust_usage(size)
            self._write_record(sha256, target.stat())
        finally:
            temp.unlink(missing_ok=True)


class Job:
    """Blobs one job uses: each `get` pins its blob until `close()` (or the end of the `with` block)."""

    def __init__(self, cache: BlobCache) -> None:
        self.cache = cache
        self.stats = CacheStats()
        self._pins: dict[str, IO[str]] = {}
        self._recorded = False

    def __enter__(self) -> Job:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def get(self, sha256: str, size: int, fetch: Fetch) -> Path:
        """The path of the verified blob, fetched first when it is missing or damaged; pinned for the job."""
        sha256 = sha256.lower()
        if not _HASH.fullmatch(sha256):
            raise ValueError(f"sha256 {sha256!r}: must be 64 hexadecimal digits")
        if size < 0:
            raise ValueError(f"size {size}: must not be negative")
        cache = self.cache
        if sha256 not in self._pins:
            pin = cache._lock_path(sha256, "pin").open("a")
            fcntl.flock(pin, fcntl.LOCK_SH)  # waits only while an eviction of this blob runs
            self._pins[sha256] = pin
        os.utime(self._pins[sha256].fileno())  # the last use, for least-recently-used eviction
        with _locked(cache._lock_path(sha256, "fetch"), fcntl.LOCK_EX):
            if cache._verified(sha256, size):
                self.stats.hits += 1
            else:
                self.stats.misses += 1
                cache._remove(sha256)
                cache._download(sha256, size, fetch, self.stats)
        return cache.blob_path(sha256)

    def close(self) -> None:
        """Unpin the job's blobs and add its counters to the cache's (once per job: one write, not one a get)."""
        for pin in self._pins.values():
            pin.close()  # releases the shared lock
        self._pins.clear()
        if not self._recorded and self.stats != CacheStats():
            self.cache._record_stats(self.stats)
        self._recorded = True


@contextlib.contextmanager
def _locked(path: Path, mode: int) -> Iterator[IO[str]]:
    with path.open("a") as handle:
        fcntl.flock(handle, mode)
        yield handle


def _stat_key(stat: os.stat_result) -> list[int]:
    return [stat.st_size, stat.st_ino, stat.st_mtime_ns, stat.st_ctime_ns]


def _sha256_file(path: Path, chunk: int) -> str:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as source:
            while block := source.read(chunk):
                digest.update(block)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.EIO):
            return ""
        raise
    return digest.hexdigest()


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temp.write_text(json.dumps(obj))
    os.replace(temp, path)


def read_stream(opener: Callable[[], IO[bytes]], chunk_bytes: int = 1024 * 1024) -> Fetch:
    """A fetch function from a function opening a stream (a file, an object store's `open`, an HTTP body)."""

    def fetch() -> Iterator[bytes]:
        with opener() as stream:
            while chunk := stream.read(chunk_bytes):
                yield chunk

    return fetch


__all__ = [
    "BlobCache",
    "BlobCacheError",
    "BlobMismatchError",
    "CacheFullError",
    "CacheStats",
    "Fetch",
    "Job",
    "read_stream",
]
