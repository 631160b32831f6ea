"""Upload checks for model archives, without ever loading the model: size cap, member pre-scan, manifest.

Stdlib only (see the package docstring). A zip is refused before anything is extracted when a member is a
link, a device or anything but a regular file or a directory, has an absolute path, a drive letter, a
backslash or a '..' component, is encrypted, is declared twice, or when the member count, the declared
total size or a member's compression ratio exceeds the limits (zip bombs). `extract_archive` then counts the
bytes it actually writes, so a zip whose headers lie about sizes is stopped as well. The model member must be
a TorchScript container (a zip holding code/ and constants.pkl): a plain `torch.save` pickle is refused here
with a clear message instead of failing later inside the sandbox.
"""

from __future__ import annotations

import os
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from worker.archives.manifest import (
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    AnyManifest,
    ArchiveError,
    loads_manifest,
)

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_ALLOWED_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}
_CHUNK = 1 << 20


@dataclass(frozen=True)
class ArchiveLimits:
    """Bounds applied to every upload; the defaults suit ResNet50-class detectors with room to spare. The
    server builds them from its upload limit (`for_upload`, MIDOG_MAX_MODEL_BYTES), so the upload, its check
    and the worker's extraction agree."""

    max_archive_bytes: int = 2 << 30
    max_total_bytes: int = 4 << 30
    max_members: int = 256
    max_ratio: float = 200.0
    ratio_floor_bytes: int = 1 << 20  # smaller members may compress as well as they like

    @classmethod
    def for_upload(cls, max_archive_bytes: int) -> ArchiveLimits:
        """The limits of archives up to `max_archive_bytes`, unpacking to at most twice that."""
        return cls(max_archive_bytes=max_archive_bytes, max_total_bytes=2 * max_archive_bytes)


@dataclass(frozen=True)
class _Scan:
    prefix: str  # "" or "top/" when everything sits in one top-level folder
    manifest: AnyManifest
    members: tuple[zipfile.ZipInfo, ...]


def validate_archive(path: Path, *, limits: ArchiveLimits | None = None) -> AnyManifest:
    """Check an uploaded archive (a .zip file or an unpacked directory) and return its manifest: an
    ArchiveManifest for a detector, a ClassifierManifest for a classifier (`manifest.task` tells them apart).

    Raises ArchiveError with a one-line message for the participant. Never loads the model file.
    """
    limits = limits or ArchiveLimits()
    if path.is_dir() and not path.is_symlink():
        return _validate_directory(path, limits)
    return _scan_zip(path, limits).manifest


def extract_archive(path: Path, dest: Path, *, limits: ArchiveLimits | None = None) -> Path:
    """Validate a zip archive and extract it into the new directory `dest`; return the folder that holds
    manifest.json. Bytes are counted while writing, independently of what the zip headers declare."""
    limits = limits or ArchiveLimits()
    scan = _scan_zip(path, limits)
    extract_zip_members(path, scan.members, dest, limits=limits)
    root = dest / scan.prefix if scan.prefix else dest
    return root


def extract_zip_members(path: Path, members: tuple[zipfile.ZipInfo, ...], dest: Path, *, limits: ArchiveLimits) -> None:
    """Extract the members returned by `scan_zip` into the new directory `dest`, counting the bytes actually
    written (a member that holds more than its header declares, or a total over the limit, is refused)."""
    dest.mkdir(parents=True, exist_ok=False)
    written = 0
    with zipfile.ZipFile(path) as zf:
        for info in members:
            target = dest.joinpath(*PurePosixPath(info.filename).parts)
            if not target.resolve().is_relative_to(dest.resolve()):
                raise ArchiveError(f"archive: {info.filename!r}: resolves outside the archive")
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            with os.fdopen(fd, "wb") as out, zf.open(info) as src:
                member_bytes = 0
                try:
                    while chunk := src.read(_CHUNK):
                        member_bytes += len(chunk)
                        written += len(chunk)
                        if member_bytes > info.file_size or written > limits.max_total_bytes:
                            raise _fail(f"member {info.filename!r}: holds more data than its header declares")
                        out.write(chunk)
                except (zipfile.BadZipFile, OSError, EOFError) as exc:
                    raise _fail(f"member {info.filename!r}: is corrupt ({exc})") from None


def _fail(message: str) -> ArchiveError:
    return ArchiveError(f"archive: {message}")


def check_member_name(name: str) -> None:
    """Refuse empty, NUL, backslash, absolute (or drive-letter) names and '..', '.' or empty components."""
    shown = repr(name if len(name) <= 80 else name[:77] + "...")
    if not name or "\x00" in name or "\\" in name:
        raise _fail(f"member {shown}: invalid name (empty, NUL or backslash)")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise _fail(f"member {shown}: absolute paths are not allowed")
    parts = name.rstrip("/").split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise _fail(f"member {shown}: '..', '.' and empty path components are not allowed")


def scan_zip(path: Path, limits: ArchiveLimits) -> tuple[zipfile.ZipInfo, ...]:
    """Pre-scan a zip without extracting anything: archive size, member count, names, kinds (regular files and
    directories only), encryption, compression methods, duplicates, declared total size and per-member
    compression ratio. Returns the members in archive order."""
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise _fail(f"cannot be read ({exc.strerror})") from None
    if size > limits.max_archive_bytes:
        raise _fail(f"is {size} bytes, more than the limit of {limits.max_archive_bytes}")
    if magic not in _ZIP_MAGIC:
        # A tar here is usually a container image sent as the wrong kind.
        raise _fail("is not a zip file: model archives are zip files (a container image tar is kind 'container')")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise _fail(f"is not a readable zip file ({exc})") from None
    with zf:
        infos = zf.infolist()
    if len(infos) > limits.max_members:
        raise _fail(f"has {len(infos)} members, more than the limit of {limits.max_members}")
    seen: set[str] = set()
    total = 0
    for info in infos:
        _check_member(info, limits)
        key = info.filename.rstrip("/")
        if key in seen:
            raise _fail(f"member {info.filename!r}: appears twice")
        seen.add(key)
        total += info.file_size
        if total > limits.max_total_bytes:
            raise _fail(f"unpacks to more than the limit of {limits.max_total_bytes} bytes")
    return tuple(infos)


def _scan_zip(path: Path, limits: ArchiveLimits) -> _Scan:
    infos = scan_zip(path, limits)
    seen = {info.filename.rstrip("/") for info in infos}
    prefix = _root_prefix(seen)
    manifest_name = prefix + MANIFEST_NAME
    if manifest_name not in seen:
        raise _fail(f"{MANIFEST_NAME} is missing at the top level")
    by_name = {info.filename.rstrip("/"): info for info in infos}
    manifest_info = by_name[manifest_name]
    if manifest_info.is_dir():
        raise _fail(f"{MANIFEST_NAME} is a directory")
    with zipfile.ZipFile(path) as zf:
        with zf.open(manifest_info) as fh:
            manifest = loads_manifest(fh.read(MAX_MANIFEST_BYTES + 1))
        model_info = by_name.get(prefix + manifest.model)
        if model_info is None or model_info.is_dir():
            raise ArchiveError(f"{MANIFEST_NAME}: model: {manifest.model!r} is not a file in the archive")
        with zf.open(model_info) as fh:
            _check_torchscript(fh, manifest.model)
    return _Scan(prefix, manifest, infos)


def _check_member(info: zipfile.ZipInfo, limits: ArchiveLimits) -> None:
    name = info.filename
    check_member_name(name)
    mode = info.external_attr >> 16
    kind = stat.S_IFMT(mode)
    if kind == stat.S_IFLNK:
        raise _fail(f"member {name!r}: symbolic links are not allowed")
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise _fail(f"member {name!r}: only regular files and directories are allowed")
    if info.flag_bits & 0x1:
        raise _fail(f"member {name!r}: encrypted members are not allowed")
    if info.compress_type not in _ALLOWED_METHODS:
        raise _fail(f"member {name!r}: unsupported compression method {info.compress_type}")
    if info.is_dir() and info.file_size:
        raise _fail(f"member {name!r}: a directory entry with data")
    if info.file_size > limits.ratio_floor_bytes:
        ratio = info.file_size / max(info.compress_size, 1)
        if ratio > limits.max_ratio:
            raise _fail(f"member {name!r}: compression ratio {ratio:.0f} exceeds the limit of {limits.max_ratio:g}")


def _root_prefix(names: set[str]) -> str:
    """'' when manifest.json is at the root; 'top/' when every member sits inside one folder 'top'."""
    if MANIFEST_NAME in names:
        return ""
    tops = {name.split("/", 1)[0] for name in names}
    if len(tops) == 1:
        return tops.pop() + "/"
    return ""


def _check_torchscript(fh: IO[bytes], name: str) -> None:
    """A TorchScript file is a zip with <root>/code/... and <root>/constants.pkl; `torch.save` output lacks
    both. Only the central directory is read: nothing is unpickled."""
    head = fh.read(4)
    if head not in _ZIP_MAGIC:
        raise ArchiveError(f"{MANIFEST_NAME}: model: {name!r} is not a TorchScript file (save it with torch.jit.save)")
    fh.seek(0)
    try:
        with zipfile.ZipFile(fh) as inner:
            names = inner.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        raise ArchiveError(f"{MANIFEST_NAME}: model: {name!r} is not a readable TorchScript file") from None
    has_code = any("/code/" in n for n in names)
    has_constants = any(n.endswith("/constants.pkl") for n in names)
    if not (has_code and has_constants):
        raise ArchiveError(
            f"{MANIFEST_NAME}: model: {name!r} is not TorchScript (a torch.save pickle?); save it with torch.jit.save"
        )


def _validate_directory(root: Path, limits: ArchiveLimits) -> AnyManifest:
    count = 0
    total = 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for entry in [*dirnames, *filenames]:
            full = Path(dirpath, entry)
            rel = full.relative_to(root).as_posix()
            count += 1
            if count > limits.max_members:
                raise _fail(f"has more than the limit of {limits.max_members} members")
            st = full.lstat()
            if stat.S_ISLNK(st.st_mode):
                raise _fail(f"member {rel!r}: symbolic links are not allowed")
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
                raise _fail(f"member {rel!r}: only regular files and directories are allowed")
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
                if total > limits.max_total_bytes:
                    raise _fail(f"holds more than the limit of {limits.max_total_bytes} bytes")
    manifest_path = root / MANIFEST_NAME
    if not manifest_path.is_file():
        raise _fail(f"{MANIFEST_NAME} is missing at the top level")
    with manifest_path.open("rb") as fh:
        manifest = loads_manifest(fh.read(MAX_MANIFEST_BYTES + 1))
    model_path = root / manifest.model
    if not model_path.is_file():
        raise ArchiveError(f"{MANIFEST_NAME}: model: {manifest.model!r} is not a file in the archive")
    with model_path.open("rb") as fh:
        _check_torchscript(fh, manifest.model)
    return manifest


def pack_archive(directory: Path, zip_path: Path, *, limits: ArchiveLimits | None = None) -> AnyManifest:
    """Zip an archive directory (manifest.json at the top level, regular files only) and check the result
    with the same rules as an upload; returns its manifest."""
    validate_archive(directory, limits=limits)
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(directory.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(directory).as_posix())
    return validate_archive(zip_path, limits=limits)
