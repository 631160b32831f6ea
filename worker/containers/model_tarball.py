"""Model tarballs: weights uploaded apart from a container image, extracted read-only to /opt/ml/model.

Grand-challenge lets an algorithm's weights change without a new image: a `model.tar.gz` is extracted to
`/opt/ml/model/` before the run. The same rules apply at upload (`check_model_tarball`) and again at run
time (`extract_model_tarball`, the file may have sat in storage), each refusal one participant line
(ModelTarballError):
- a tar archive, gzip-compressed or not, of at most `max_bytes` on disk, whose files add up to at most
  `max_total_bytes` and number at most `max_files`;
- members are regular files and directories only: no links, devices, FIFOs; no absolute names, no '..'
  components, no name given twice; a leading "./" is dropped (`tar -C model -czf model.tar.gz .`);
- at least one regular file.
The archive is read once, streaming: the SHA-256 of the upload is computed in the same pass.
Extraction creates only directories (0755) and regular files (0644) below a fresh directory, each opened
with O_EXCL | O_NOFOLLOW, so nothing in the archive can write outside it.

Imports the stdlib only.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

_CHUNK = 1024 * 1024


class ModelTarballError(ValueError):
    """The model tarball is refused; the message is one line for the participant."""


@dataclass(frozen=True)
class ModelLimits:
    max_bytes: int = 20 * 1024**3
    max_total_bytes: int = 40 * 1024**3
    max_files: int = 10_000


@dataclass(frozen=True)
class ModelTarball:
    """What the check learnt: regular files, their total size, and the SHA-256 of the upload as stored."""

    files: int
    bytes: int
    sha256: str


class _HashingReader:
    """A read-only file wrapper that hashes every byte the tar reader takes, so one pass gives both."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self.digest.update(data)
        return data

    def drain(self) -> str:
        while self.read(_CHUNK):
            pass
        return self.digest.hexdigest()


def member_name(name: str) -> str:
    """The member's path relative to /opt/ml/model ("" for the top directory); refuses unsafe names."""
    if not name or name.startswith("/") or "\x00" in name or "\\" in name:
        raise ModelTarballError(f"model tarball member {name[:200]!r} has an unsafe name")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ModelTarballError(f"model tarball member {name[:200]!r} has a '..' component")
    return "/".join(parts)


def _limits(max_bytes: int | None, max_files: int | None) -> ModelLimits:
    base = ModelLimits()
    size = base.max_bytes if max_bytes is None else max_bytes
    return ModelLimits(
        max_bytes=size, max_total_bytes=2 * size, max_files=base.max_files if max_files is None else max_files
    )


def _walk(path: Path, limits: ModelLimits, visit: Any) -> ModelTarball:
    """Stream the archive once, checking every member; `visit(name, info, tar)` sees each accepted one."""
    size = path.stat().st_size
    if size > limits.max_bytes:
        raise ModelTarballError(f"model tarball is {size} bytes, over the limit of {limits.max_bytes}")
    seen: set[str] = set()
    files = total = 0
    try:
        with path.open("rb") as raw:
            reader = _HashingReader(raw)
            # "r|*": a stream, read front to back once (gzip or plain), never seeking back for a member.
            with tarfile.open(fileobj=reader, mode="r|*") as tar:  # type: ignore[call-overload]
                for info in tar:
                    name = member_name(info.name)
                    if name in seen:
                        raise ModelTarballError(f"model tarball member {name!r} appears twice")
                    seen.add(name)
                    if info.isdir():
                        visit(name, info, tar)
                        continue
                    if not info.isreg():
                        kind = "a link" if info.issym() or info.islnk() else "a device or special file"
                        raise ModelTarballError(
                            f"model tarball member {name!r} is {kind}; only files and folders are allowed"
                        )
                    files += 1
                    if files > limits.max_files:
                        raise ModelTarballError(f"model tarball holds more than {limits.max_files} files")
                    total += info.size
                    if total > limits.max_total_bytes:
                        raise ModelTarballError(f"model tarball content exceeds {limits.max_total_bytes} bytes")
                    visit(name, info, tar)
            sha256 = reader.drain()
    except ModelTarballError:
        raise
    except (tarfile.TarError, EOFError, OSError, ValueError):
        raise ModelTarballError("the model file is not a readable .tar.gz (make it with tar -czf)") from None
    if files == 0:
        raise ModelTarballError("the model tarball holds no files")
    return ModelTarball(files=files, bytes=total, sha256=sha256)


def check_model_tarball(path: Path, *, max_bytes: int | None = None, max_files: int | None = None) -> ModelTarball:
    """Check the tarball at `path` (module rules) in one streaming pass; raises ModelTarballError."""
    return _walk(path, _limits(max_bytes, max_files), lambda name, info, tar: None)


def extract_model_tarball(
    path: Path, dest: Path, *, max_bytes: int | None = None, max_files: int | None = None
) -> ModelTarball:
    """Extract into `dest` (created; must not exist), applying the same rules while it writes."""
    dest.mkdir(mode=0o755)
    root = dest.resolve()

    def write(name: str, info: tarfile.TarInfo, tar: tarfile.TarFile) -> None:
        if not name:
            return
        target = root / name
        # Parents are created here as plain directories, so none of them can be a link out of `root`.
        target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        if info.isdir():
            target.mkdir(mode=0o755, exist_ok=True)
            return
        source = tar.extractfile(info)
        if source is None:  # tarfile gives None only for non-files, which _walk refused already
            raise ModelTarballError(f"model tarball member {name!r} is not readable")
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "wb") as out:
            while chunk := source.read(_CHUNK):
                out.write(chunk)

    return _walk(path, _limits(max_bytes, max_files), write)
