"""Safe unpacking of an uploaded test-set archive: zip, or tar (plain, gzip, bzip2 or xz), told by magic bytes.

Every member is pre-scanned before anything is written: only regular files and directories (no symbolic or
hard links, devices, FIFOs, sparse files), no absolute names, drive letters, backslashes or '..' components,
no duplicates, a bounded member count and a bounded declared total size. Zip members also have a bounded
compression ratio (worker.archives.validate does the zip pre-scan and extraction for both uses); a compressed
tar has a bounded overall ratio, and its decompressed stream is capped while it is read, so neither a bomb
nor an oversized pax/GNU long-name header can exhaust memory or disk. Extraction then writes into a fresh
directory with O_EXCL|O_NOFOLLOW, counting the bytes actually written. Errors are `ArchiveError` with one line
naming the member.

Imports the stdlib and worker.archives only (no app, celery, sqlalchemy, fastapi, torch).
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from worker.archives.manifest import ArchiveError
from worker.archives.validate import ArchiveLimits, check_member_name, extract_zip_members, scan_zip
from worker.datasets.manifest import MANIFEST_NAME
from worker.safe_delete import discard_tree

_CHUNK = 1 << 20
_TAR_BLOCK = 512
MAX_TAR_HEADER_BYTES = 1 << 16  # pax extended headers and GNU long names; real ones are a few hundred bytes

_READ_ERRORS = (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError, ValueError)


@dataclass(frozen=True)
class UnpackLimits:
    """Bounds for one test-set archive. The defaults fit a MIDOG-sized test set (hundreds of whole-slide
    regions of interest) with room to spare; the API derives the byte limits from its upload limit."""

    max_archive_bytes: int = 32 << 30
    max_total_bytes: int = 64 << 30
    max_members: int = 10_000
    max_ratio: float = 200.0
    ratio_floor_bytes: int = 1 << 20  # smaller members (and archives) may compress as well as they like

    def for_zip(self) -> ArchiveLimits:
        return ArchiveLimits(
            max_archive_bytes=self.max_archive_bytes,
            max_total_bytes=self.max_total_bytes,
            max_members=self.max_members,
            max_ratio=self.max_ratio,
            ratio_floor_bytes=self.ratio_floor_bytes,
        )


def archive_kind(head: bytes) -> str | None:
    """'zip', 'tar', 'gzip', 'bzip2' or 'xz' from the first bytes of a file (>= 262 for a plain tar)."""
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head[:3] == b"BZh":
        return "bzip2"
    if head[:6] == b"\xfd7zXZ\x00":
        return "xz"
    if head[257:262] == b"ustar":
        return "tar"
    return None


def unpack_archive(path: Path, dest: Path, *, limits: UnpackLimits | None = None) -> Path:
    """Pre-scan the archive at `path`, then extract it into the new directory `dest`.

    Returns the directory holding manifest.json: `dest` itself, or its single top-level folder when the set
    was packed as one folder (`tar czf set.tar.gz set/`). On any error nothing is left under `dest`.
    """
    limits = limits or UnpackLimits()
    try:
        with path.open("rb") as fh:
            head = fh.read(_TAR_BLOCK)
        size = path.stat().st_size
    except OSError as exc:
        raise _fail(f"cannot be read ({exc.strerror})") from None
    if size > limits.max_archive_bytes:
        raise _fail(f"is {size} bytes, more than the limit of {limits.max_archive_bytes}")
    kind = archive_kind(head)
    if kind is None:
        raise _fail("is neither a zip nor a tar file (plain, gzip, bzip2 or xz)")
    # nothing is written before the whole scan has passed
    if kind == "zip":
        zip_limits = limits.for_zip()
        members = scan_zip(path, zip_limits)
        files = {info.filename for info in members if not info.is_dir()}
        names = _check_tree({info.filename.rstrip("/") for info in members}, files)
    else:
        names = _scan_tar(path, kind, size, limits)
    try:
        if kind == "zip":
            extract_zip_members(path, members, dest, limits=zip_limits)
        else:
            _extract_tar(path, kind, dest, limits)
    except OSError as exc:
        discard_tree(dest)
        raise _fail(f"cannot be extracted ({exc.strerror or exc})") from None
    except BaseException:
        discard_tree(dest)
        raise
    return dest / _root_prefix(names)


def _check_tree(names: set[str], files: set[str]) -> set[str]:
    """Refuse a member below a name that is a file (`a` a file and `a/b` a member)."""
    for name in names:
        parts = name.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent in files:
                raise _fail(f"member {name!r}: {parent!r} is a file, not a directory")
    return names


def _fail(message: str) -> ArchiveError:
    return ArchiveError(f"archive: {message}")


def _root_prefix(names: set[str]) -> str:
    """'' when manifest.json is at the top level; 'top' when every member sits inside one folder 'top'."""
    if MANIFEST_NAME in names:
        return ""
    tops = {name.split("/", 1)[0] for name in names}
    return tops.pop() if len(tops) == 1 else ""


class _CappedStream(io.RawIOBase):
    """The decompressed tar stream, refused once more than `limit` bytes have come out of it."""

    def __init__(self, source: io.BufferedIOBase, limit: int) -> None:
        super().__init__()
        self.source = source
        self.limit = limit
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.source.read(min(len(view), _CHUNK))
        self.count += len(data)
        if self.count > self.limit:
            raise _fail(f"unpacks to more than the limit of {self.limit} bytes")
        view[: len(data)] = data
        return len(data)


class _BoundedTarInfo(tarfile.TarInfo):
    """Refuses pax/GNU long-name headers over MAX_TAR_HEADER_BYTES before tarfile reads them into memory."""

    _SPECIAL = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.XGLTYPE, b"X")

    def _proc_member(self, tar: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type in self._SPECIAL and self.size > MAX_TAR_HEADER_BYTES:
            raise _fail(f"an extended tar header of {self.size} bytes exceeds {MAX_TAR_HEADER_BYTES}")
        result: tarfile.TarInfo = super()._proc_member(tar)  # type: ignore[misc]
        return result


def _decompressed(kind: str, raw: io.BufferedReader) -> io.BufferedIOBase:
    if kind == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if kind == "bzip2":
        return bz2.BZ2File(raw, mode="rb")
    if kind == "xz":
        return lzma.LZMAFile(raw, mode="rb")
    return raw


def _iter_tar(path: Path, kind: str, limits: UnpackLimits) -> Iterator[tuple[str, tarfile.TarInfo, tarfile.TarFile]]:
    """Yield (checked name, member, open tar) in stream order; '.' entries are skipped."""
    # the stream may hold every member's data plus its header blocks (pax headers included) and the end marker
    cap = limits.max_total_bytes + (limits.max_members + 2) * (2 * _TAR_BLOCK + MAX_TAR_HEADER_BYTES)
    with path.open("rb") as raw, _decompressed(kind, raw) as source, _CappedStream(source, cap) as stream:
        try:
            with tarfile.open(fileobj=stream, mode="r|", tarinfo=_BoundedTarInfo) as tar:
                count = 0
                for info in tar:
                    count += 1
                    if count > limits.max_members:
                        raise _fail(f"has more than the limit of {limits.max_members} members")
                    name = info.name
                    while name.startswith("./"):
                        name = name[2:]
                    if name.rstrip("/") in ("", ".") and info.isdir():
                        continue
                    _check_tar_member(name, info)
                    yield name.rstrip("/"), info, tar
        except ArchiveError:
            raise
        except _READ_ERRORS as exc:
            raise _fail(f"is not a readable tar file ({exc})") from None


def _check_tar_member(name: str, info: tarfile.TarInfo) -> None:
    check_member_name(name)
    if info.issym():
        raise _fail(f"member {name!r}: symbolic links are not allowed")
    if info.islnk():
        raise _fail(f"member {name!r}: hard links are not allowed")
    if info.ischr() or info.isblk():
        raise _fail(f"member {name!r}: device nodes are not allowed")
    if info.isfifo():
        raise _fail(f"member {name!r}: FIFOs are not allowed")
    if not (info.isdir() or info.type in (tarfile.REGTYPE, tarfile.AREGTYPE)) or info.issparse():
        raise _fail(f"member {name!r}: only regular files and directories are allowed")
    if info.isdir() and info.size:
        raise _fail(f"member {name!r}: a directory entry with data")


def _scan_tar(path: Path, kind: str, archive_bytes: int, limits: UnpackLimits) -> set[str]:
    seen: set[str] = set()
    files: set[str] = set()
    total = 0
    for name, info, _ in _iter_tar(path, kind, limits):
        if name in seen:
            raise _fail(f"member {name!r}: appears twice")
        seen.add(name)
        if not info.isdir():
            files.add(name)
        total += info.size
        if total > limits.max_total_bytes:
            raise _fail(f"member {name!r}: unpacks to more than the limit of {limits.max_total_bytes} bytes")
    if kind != "tar" and total > limits.ratio_floor_bytes:
        ratio = total / max(archive_bytes, 1)
        if ratio > limits.max_ratio:
            raise _fail(f"compression ratio {ratio:.0f} exceeds the limit of {limits.max_ratio:g}")
    return _check_tree(seen, files)


def _extract_tar(path: Path, kind: str, dest: Path, limits: UnpackLimits) -> None:
    dest.mkdir(parents=True, exist_ok=False)
    base = dest.resolve()
    written = 0
    for name, info, tar in _iter_tar(path, kind, limits):
        target = dest.joinpath(*PurePosixPath(name).parts)
        if not target.resolve().is_relative_to(base):
            raise _fail(f"member {name!r}: resolves outside the archive")
        if info.isdir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        src = tar.extractfile(info)
        if src is None:
            raise _fail(f"member {name!r}: cannot be read")
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "wb") as out, src:
            member_bytes = 0
            try:
                while chunk := src.read(_CHUNK):
                    member_bytes += len(chunk)
                    written += len(chunk)
                    if member_bytes > info.size or written > limits.max_total_bytes:
                        raise _fail(f"member {name!r}: holds more data than its header declares")
                    out.write(chunk)
            except ArchiveError:
                raise
            except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError) as exc:
                raise _fail(f"member {name!r}: is corrupt ({exc})") from None
