"""Validation of a `docker save` / `podman save` (docker-archive) image archive, before anything loads it.

Rules, each refused with one participant-readable line (ImageArchiveError, a SubmissionError):
- the archive is a tar (optionally gzip-compressed) of at most `max_archive_bytes`, whose members add up
  to at most `max_total_bytes` and number at most `max_members`;
- members are regular files, directories, or links that stay inside the archive: no absolute names, no
  '..' components, no devices, FIFOs or other special files, no duplicates;
- manifest.json lists exactly one image; its config and layers are members of the archive;
- the image config says os linux, architecture amd64, and a USER that is not root (not empty, "root", "0",
  or a root uid with any group);
- a config named after its digest (blobs/sha256/<hex>, <hex>.json) must hash to that digest;
- USER resolves (worker.containers.image_user) in the /etc/passwd and /etc/group the layers leave, to a
  uid other than 0.
The archive is read once, streaming (a .tar.gz is decompressed once, on the fly): member rules, the small
JSON members and each layer's etc/passwd and etc/group are all taken in that pass, since manifest.json
(which says which member is what) usually comes last. The image id returned is the sha256 of the config,
which is how the engine names the loaded image.

Imports the stdlib, worker.errors and worker.containers.image_user only.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import posixpath
import re
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

from worker.containers.image_user import ImageUser, UserResolutionError, resolve_user
from worker.errors import SubmissionError

_MAX_JSON_BYTES = 4 * 1024**2
_MAX_BUFFERED_BYTES = 64 * 1024**2
_MAX_ACCOUNT_BYTES = 1024**2
# Large reads: tarfile's default of 10 KiB makes a streaming pass over gigabytes several times slower.
_BUFSIZE = 1024**2
_ACCOUNT_FILES = ("etc/passwd", "etc/group")
_WHITEOUTS = {"etc/.wh.passwd": "etc/passwd", "etc/.wh.group": "etc/group"}
_HEX64 = re.compile(r"[0-9a-f]{64}")


class ImageArchiveError(SubmissionError, ValueError):
    """The uploaded image archive is refused; the message is one line for the participant."""


@dataclass(frozen=True)
class ImageLimits:
    """The server builds them from its upload limit (`for_upload`, MIDOG_MAX_CONTAINER_BYTES)."""

    max_archive_bytes: int = 20 * 1024**3
    max_total_bytes: int = 40 * 1024**3
    max_members: int = 10_000

    @classmethod
    def for_upload(cls, max_archive_bytes: int) -> ImageLimits:
        """The limits of image archives up to `max_archive_bytes`, holding at most twice that."""
        return cls(max_archive_bytes=max_archive_bytes, max_total_bytes=2 * max_archive_bytes)


@dataclass(frozen=True)
class ImageArchive:
    """What validation learnt about the image, without loading it."""

    image_id: str
    repo_tags: tuple[str, ...]
    user: str
    architecture: str
    layers: tuple[str, ...]
    total_bytes: int
    # USER resolved in the image's own /etc/passwd and /etc/group (uid, gid, groups, HOME).
    run_user: ImageUser

    @property
    def numeric_user(self) -> tuple[int, int] | None:
        """(uid, gid) when USER is numeric ("1000" or "1000:1000"), else None (a name, resolved in the image)."""
        uid, _, gid = self.user.partition(":")
        if uid.isdigit() and (not gid or gid.isdigit()):
            return int(uid), int(gid or uid)
        return None


def _normalise(name: str) -> str:
    if not name or name.startswith("/") or "\x00" in name or "\\" in name:
        raise ImageArchiveError(f"image archive member {name[:200]!r} has an unsafe name")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ImageArchiveError(f"image archive member {name[:200]!r} has a '..' component")
    return "/".join(parts)


@dataclass
class _Scan:
    """What the one pass over the archive collected."""

    members: dict[str, tarfile.TarInfo] = field(default_factory=dict)
    # Small regular members (manifest.json, the config), kept to be parsed once the manifest is known.
    small: dict[str, bytes] = field(default_factory=dict)
    # Per member that reads as a layer tar: its etc/passwd and etc/group (None: a whiteout deletes it).
    accounts: dict[str, dict[str, bytes | None]] = field(default_factory=dict)
    total: int = 0


def _layer_accounts(handle: IO[bytes]) -> dict[str, bytes | None] | None:
    """etc/passwd and etc/group of a layer tar (plain or gzip), None when the member is no readable tar."""
    found: dict[str, bytes | None] = {}
    try:
        with tarfile.open(fileobj=handle, mode="r|*", bufsize=_BUFSIZE) as layer:
            for info in layer:
                name = "/".join(part for part in info.name.split("/") if part not in ("", "."))
                if name in _ACCOUNT_FILES and info.isreg() and info.size <= _MAX_ACCOUNT_BYTES:
                    data = layer.extractfile(info)
                    found[name] = data.read() if data is not None else None
                elif name in _WHITEOUTS:
                    found[_WHITEOUTS[name]] = None
    except (tarfile.TarError, EOFError, OSError, zlib.error):
        return None
    return found


def _open_stream(path: Path) -> IO[bytes]:
    """The archive's bytes, decompressed on the fly when it is gzip (every member of a concatenated one)."""
    with path.open("rb") as probe:
        gzipped = probe.read(2) == b"\x1f\x8b"
    if gzipped:
        return cast(IO[bytes], gzip.GzipFile(path, mode="rb"))
    return path.open("rb")


def _scan(path: Path, limits: ImageLimits) -> _Scan:
    """Read the archive once, streaming (gzip is decompressed on the fly): rules, small members, layers."""
    size = path.stat().st_size
    if size > limits.max_archive_bytes:
        raise ImageArchiveError(f"image archive is {size} bytes, over the limit of {limits.max_archive_bytes}")
    scan = _Scan()
    members = scan.members
    buffered = 0
    try:
        with _open_stream(path) as raw, tarfile.open(fileobj=raw, mode="r|", bufsize=_BUFSIZE) as tar:
            for info in tar:
                if len(members) >= limits.max_members:
                    raise ImageArchiveError(f"image archive has more than {limits.max_members} members")
                name = _normalise(info.name)
                if name in members:
                    raise ImageArchiveError(f"image archive member {name!r} appears twice")
                if info.issym():
                    target = posixpath.normpath(posixpath.join(posixpath.dirname(name), info.linkname))
                    if info.linkname.startswith("/") or target == ".." or target.startswith("../"):
                        raise ImageArchiveError(f"image archive link {name!r} points outside the archive")
                elif info.islnk():
                    if _normalise(info.linkname) not in members:
                        raise ImageArchiveError(f"image archive hard link {name!r} points outside the archive")
                elif not (info.isreg() or info.isdir()):
                    raise ImageArchiveError(f"image archive member {name!r} is a device or special file")
                scan.total += max(info.size, 0)
                if scan.total > limits.max_total_bytes:
                    raise ImageArchiveError(f"image archive content exceeds {limits.max_total_bytes} bytes")
                members[name] = info
                if info.isreg() and info.size > 0:
                    handle = tar.extractfile(info)
                    if handle is None:
                        continue
                    if info.size <= _MAX_JSON_BYTES and buffered + info.size <= _MAX_BUFFERED_BYTES:
                        data = handle.read()
                        buffered += len(data)
                        scan.small[name] = data
                        handle = io.BytesIO(data)
                    if not name.endswith(".json"):
                        accounts = _layer_accounts(handle)
                        if accounts is not None:
                            scan.accounts[name] = accounts
    except (tarfile.TarError, EOFError, OSError, zlib.error, gzip.BadGzipFile):
        raise ImageArchiveError("the upload is not a readable image archive (docker save / podman save)") from None
    return scan


def _resolve(members: dict[str, tarfile.TarInfo], name: str) -> str:
    """Follow links inside the archive (a few hops) to the regular file a name stands for."""
    current = _normalise(name)
    for _ in range(8):
        info = members.get(current)
        if info is None:
            raise ImageArchiveError(f"manifest.json refers to {name!r}, which is not in the archive")
        if info.isreg():
            return current
        if info.issym():
            current = posixpath.normpath(posixpath.join(posixpath.dirname(current), info.linkname))
        elif info.islnk():
            current = _normalise(info.linkname)
        else:
            break
    raise ImageArchiveError(f"manifest.json entry {name!r} is not a file in the archive")


def _read_json(scan: _Scan, name: str) -> tuple[Any, bytes]:
    member = _resolve(scan.members, name)
    if scan.members[member].size > _MAX_JSON_BYTES:
        raise ImageArchiveError(f"{name!r} in the image archive is too large")
    raw = scan.small.get(member, b"" if scan.members[member].size == 0 else None)
    if raw is None:
        raise ImageArchiveError(f"{name!r} in the image archive could not be read (too many small members)")
    try:
        return json.loads(raw), raw
    except (ValueError, RecursionError):
        raise ImageArchiveError(f"{name!r} in the image archive is not valid JSON") from None


def _image_accounts(scan: _Scan, layers: list[str]) -> dict[str, str | None]:
    """The image's /etc/passwd and /etc/group text after applying its layers in order (None: absent)."""
    merged: dict[str, str | None] = {name: None for name in _ACCOUNT_FILES}
    for layer in layers:
        for name, data in scan.accounts.get(_resolve(scan.members, layer), {}).items():
            merged[name] = None if data is None else data.decode("utf-8", "replace")
    return merged


def _check_user(user: Any) -> str:
    if not isinstance(user, str) or not user.strip():
        raise ImageArchiveError("the image must set a non-root USER (USER is not set, so it would run as root)")
    uid = user.strip().partition(":")[0]
    if uid in {"root", "0"} or (uid.isdigit() and int(uid) == 0):
        raise ImageArchiveError(f"the image must set a non-root USER, not {user!r}")
    return user.strip()


def validate_image_archive(path: Path, *, limits: ImageLimits | None = None) -> ImageArchive:
    """Check the archive at `path` (module rules); raises ImageArchiveError with one line."""
    limits = limits or ImageLimits()
    scan = _scan(path, limits)
    members = scan.members
    if "manifest.json" not in members:
        raise ImageArchiveError("the image archive has no manifest.json (expected docker save / podman save)")
    manifest, _ = _read_json(scan, "manifest.json")
    if not isinstance(manifest, list) or len(manifest) != 1:
        count = len(manifest) if isinstance(manifest, list) else "no"
        raise ImageArchiveError(f"the image archive must hold exactly one image, manifest.json lists {count}")
    entry = manifest[0]
    if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str):
        raise ImageArchiveError("manifest.json entry has no Config")
    layers = entry.get("Layers")
    if not isinstance(layers, list) or not layers or not all(isinstance(x, str) for x in layers):
        raise ImageArchiveError("manifest.json entry has no list of Layers")
    for layer in layers:
        _resolve(members, layer)
    tags = entry.get("RepoTags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise ImageArchiveError("manifest.json RepoTags must be a list of names")
    config, raw = _read_json(scan, entry["Config"])
    digest = hashlib.sha256(raw).hexdigest()
    named = _HEX64.search(os.path.basename(entry["Config"]))
    if named and named.group(0) != digest:
        raise ImageArchiveError("the image config does not match its digest")
    if not isinstance(config, dict):
        raise ImageArchiveError("the image config is not a JSON object")
    if config.get("os", "linux") != "linux":
        raise ImageArchiveError(f"the image is for os {config.get('os')!r}; linux is required")
    if config.get("architecture") != "amd64":
        raise ImageArchiveError(f"the image is for architecture {config.get('architecture')!r}; amd64 is required")
    settings = config.get("config") or {}
    user = _check_user(settings.get("User") if isinstance(settings, dict) else None)
    accounts = _image_accounts(scan, layers)
    try:
        run_user = resolve_user(user, accounts["etc/passwd"], accounts["etc/group"])
    except UserResolutionError as exc:
        raise ImageArchiveError(str(exc)) from None
    return ImageArchive(
        image_id=digest,
        repo_tags=tuple(tags),
        user=user,
        architecture="amd64",
        layers=tuple(layers),
        total_bytes=scan.total,
        run_user=run_user,
    )
