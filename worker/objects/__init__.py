"""Object storage behind one interface: `ObjectStore` (put and get as streams, info, exists, size, delete),
implemented by `LocalStore` (a directory; the embedded default) and `S3Store` (any S3-compatible server).

Rules every store keeps, checked by tests/objects against both:
- A key is `/`-separated segments of `[A-Za-z0-9._-]`, each starting with a letter or digit (so no `.`, `..`,
  hidden names or absolute paths); names starting with `.` are the stores' own (temp files, sidecars).
- `put` streams: it never holds more than one part (`part_bytes`) in memory, hashes while it writes, and the
  object appears whole or not at all (temp file + rename; an S3 multipart upload completed or aborted).
  Given `sha256`, a stream whose content differs is refused with `ContentMismatchError` and nothing is stored.
- Every object's SHA-256 and size are recorded at `put` and returned by `info`.
- `delete` of a missing key is not an error; `open`/`size` of one raise `ObjectNotFoundError`.
- A store that cannot be reached raises `StoreUnavailableError` (an infrastructure fault to retry, never the
  submitter's fault).

Standard library only (`worker.objects.configured.open_store` opens the configured store; the S3 store imports
boto3); must not import app, Celery, SQLAlchemy, FastAPI, pydantic or torch: the API, the scoring workers and
the command line all use it.
"""

from __future__ import annotations

import hashlib
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

PART_BYTES = 8 * 1024 * 1024
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
MAX_KEY_BYTES = 900  # below S3's 1024, leaving room for a deployment's prefix


class ObjectStoreError(Exception):
    """Base of the store's errors; the message names the key and what to do."""


class InvalidKeyError(ObjectStoreError, ValueError):
    pass


class ObjectNotFoundError(ObjectStoreError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "object not found"


class ContentMismatchError(ObjectStoreError):
    pass


class StoreUnavailableError(ObjectStoreError):
    pass


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    sha256: str


def check_key(key: str) -> str:
    """`key` if it is a valid object key, else `InvalidKeyError` saying which segment breaks which rule."""
    if not isinstance(key, str) or not key:
        raise InvalidKeyError("object key: must be a non-empty string")
    if len(key.encode()) > MAX_KEY_BYTES:
        raise InvalidKeyError(f"object key {key[:40]!r}...: longer than {MAX_KEY_BYTES} bytes")
    for segment in key.split("/"):
        if not _SEGMENT.fullmatch(segment):
            raise InvalidKeyError(
                f"object key {key!r}: segment {segment!r} must be letters, digits, '.', '_' or '-' "
                "and start with a letter or digit"
            )
    return key


def check_sha256(sha256: str) -> str:
    """A lower-case hex SHA-256, else `ValueError`."""
    lowered = sha256.lower() if isinstance(sha256, str) else ""
    if not re.fullmatch(r"[0-9a-f]{64}", lowered):
        raise ValueError(f"sha256 {sha256!r}: must be 64 hexadecimal digits")
    return lowered


class HashingReader:
    """Reads a stream in parts, hashing and counting what passed; `read_part()` returns b"" at the end."""

    def __init__(self, stream: BinaryIO, part_bytes: int = PART_BYTES) -> None:
        self._stream = stream
        self.part_bytes = part_bytes
        self._hash = hashlib.sha256()
        self.size = 0

    def read_part(self) -> bytes:
        """Up to `part_bytes` (fewer only at the end of the stream)."""
        chunks: list[bytes] = []
        wanted = self.part_bytes
        while wanted > 0:
            chunk = self._stream.read(wanted)
            if not chunk:
                break
            chunks.append(chunk)
            wanted -= len(chunk)
        part = b"".join(chunks)
        self._hash.update(part)
        self.size += len(part)
        return part

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


class ObjectStore(ABC):
    """Objects by key. Implementations: `LocalStore`, `S3Store`."""

    @abstractmethod
    def put(self, key: str, stream: BinaryIO, *, sha256: str | None = None) -> ObjectInfo:
        """Store the stream's bytes under `key` (replacing any object there); with `sha256`, refuse other content."""

    @abstractmethod
    def open(self, key: str) -> BinaryIO:
        """A readable stream of the object (close it, or use it in `with`)."""

    @abstractmethod
    def info(self, key: str) -> ObjectInfo | None:
        """The object's size and SHA-256, None when there is none."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; a missing one is not an error."""

    def exists(self, key: str) -> bool:
        return self.info(key) is not None

    def size(self, key: str) -> int:
        found = self.info(key)
        if found is None:
            raise ObjectNotFoundError(f"object {key!r} does not exist")
        return found.size

    def put_file(self, key: str, path: Path, *, sha256: str | None = None) -> ObjectInfo:
        with path.open("rb") as stream:
            return self.put(key, stream, sha256=sha256)

    def presigned_get(self, key: str, *, expires_s: int) -> str:
        """A URL that lets its holder GET the object for `expires_s` seconds (stores that serve HTTP only)."""
        raise NotImplementedError(f"{type(self).__name__} has no presigned URLs; fetch through the API instead")
