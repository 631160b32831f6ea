"""The embedded object store: one file per key under a directory, written to a temp file and renamed.

Each object `a/b` has a sidecar `a/.b.meta` holding its size, SHA-256 and the inode and mtime of the file it
describes. The sidecar is written before the rename (the inode survives it), so a crash between the two leaves
a sidecar that no longer matches; `info` then hashes the file again and rewrites it, and never reports a hash
of other content. Standard library only (see worker.objects).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import BinaryIO

from worker.objects import (
    PART_BYTES,
    ContentMismatchError,
    HashingReader,
    InvalidKeyError,
    ObjectInfo,
    ObjectNotFoundError,
    ObjectStore,
    check_key,
    check_sha256,
)


class LocalStore(ObjectStore):
    """Objects as files under `root` (created when missing, mode 0700)."""

    def __init__(self, root: Path, *, part_bytes: int = PART_BYTES) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.part_bytes = part_bytes

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    @staticmethod
    def _sidecar(path: Path) -> Path:
        return path.with_name(f".{path.name}.meta")

    def put(self, key: str, stream: BinaryIO, *, sha256: str | None = None) -> ObjectInfo:
        path = self._path(key)
        expected = check_sha256(sha256) if sha256 is not None else None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise InvalidKeyError(f"object key {key!r}: a folder of it is an object") from None
        if path.is_dir():
            raise InvalidKeyError(f"object key {key!r}: it is a folder of other objects")
        fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        temp = Path(temp_name)
        try:
            reader = HashingReader(stream, self.part_bytes)
            with os.fdopen(fd, "wb") as out:
                while part := reader.read_part():
                    out.write(part)
                out.flush()
                os.fsync(out.fileno())
            digest = reader.hexdigest()
            if expected is not None and digest != expected:
                raise ContentMismatchError(f"object {key!r}: content has sha256 {digest}, expected {expected}")
            stat = temp.stat()
            _write_sidecar(self._sidecar(path), size=reader.size, sha256=digest, stat=stat)
            os.replace(temp, path)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        return ObjectInfo(key=key, size=reader.size, sha256=digest)

    def open(self, key: str) -> BinaryIO:
        path = self._path(key)
        try:
            return path.open("rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ObjectNotFoundError(f"object {key!r} does not exist") from None

    def info(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        try:
            stat = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not path.is_file():
            return None
        sidecar = self._sidecar(path)
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            meta = json.loads(sidecar.read_text())
            if (meta["ino"], meta["mtime_ns"], meta["size"]) == (stat.st_ino, stat.st_mtime_ns, stat.st_size):
                return ObjectInfo(key=key, size=int(meta["size"]), sha256=str(meta["sha256"]))
        # no sidecar, or one of other content (a crash between sidecar and rename, or the file was changed)
        digest = hashlib.sha256()
        with path.open("rb") as source:
            while chunk := source.read(self.part_bytes):
                digest.update(chunk)
        size = stat.st_size
        with contextlib.suppress(OSError):
            _write_sidecar(sidecar, size=size, sha256=digest.hexdigest(), stat=stat)
        return ObjectInfo(key=key, size=size, sha256=digest.hexdigest())

    def delete(self, key: str) -> None:
        path = self._path(key)
        if path.is_dir():
            raise InvalidKeyError(f"object key {key!r}: it is a folder of other objects")
        # empty parent folders stay: removing them would race with a concurrent put below them
        path.unlink(missing_ok=True)
        self._sidecar(path).unlink(missing_ok=True)


def _write_sidecar(sidecar: Path, *, size: int, sha256: str, stat: os.stat_result) -> None:
    record = {"size": size, "sha256": sha256, "ino": stat.st_ino, "mtime_ns": stat.st_mtime_ns}
    fd, temp_name = tempfile.mkstemp(dir=sidecar.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(record, out)
        os.replace(temp_name, sidecar)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
