"""Loading a validated image archive into the worker's container engine, reusing it, and removing it.

podman reads the archive through the explicit `docker-archive:` transport, so only what manifest.json
describes (the single image validation checked) is loaded, never another format hidden in the same tar.
Debian's podman 4.3 cannot read a gzipped archive (`docker save | gzip`, as the grand-challenge templates
save images): it is decompressed once, streaming, into the run's work directory first (`decompress`).
An image whose config digest (its id) is already in the engine is reused, not loaded again; after a run
`release_image` keeps the `keep` most recently used participant images (a ledger in the runtime
directory) and removes older ones, so shards and resubmissions of one image load it once.
The archive's RepoTags would name the image on the host: a tag that already exists (one of the worker's
own images) is refused, and after loading every tag is removed, so participant images are known by id only.
The engine's own error output is logged for organisers and turned into a participant line that says what
to do (`engine_failure`).

Imports the stdlib, worker.containers and worker.sandbox only.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import subprocess
import time
import zlib
from pathlib import Path

from worker.containers.image_archive import ImageArchive, ImageArchiveError
from worker.sandbox.spec import SandboxError

_TIMEOUT_S = 1800.0
_CHUNK = 4 * 1024**2
logger = logging.getLogger(__name__)


def _engine(executable: str, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run([executable, *args], capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise SandboxError(f"{executable} {args[0]} did not finish in {timeout:.0f} s") from exc


def is_gzip(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(2) == b"\x1f\x8b"


def decompress(path: Path, destination: Path) -> Path:
    """Write the gzip member(s) of `path` to `destination`, streaming (one pass); returns `destination`."""
    with path.open("rb") as source, destination.open("xb") as out:
        inflater = zlib.decompressobj(zlib.MAX_WBITS | 16)
        while chunk := source.read(_CHUNK):
            while chunk:
                out.write(inflater.decompress(chunk))
                # Concatenated gzip members (pigz, cat a.gz b.gz) start a new stream after each end.
                if inflater.eof:
                    chunk = inflater.unused_data
                    inflater = zlib.decompressobj(zlib.MAX_WBITS | 16)
                else:
                    chunk = b""
        out.write(inflater.flush())
    return destination


def engine_failure(output: str) -> Exception:
    """The error for an engine that could not load an archive: the host's fault (retried) or the upload's."""
    text = output.lower()
    if "no space left" in text or "disk quota" in text or "cannot connect" in text:
        return SandboxError(f"the container engine failed on this worker: {output.strip()[-300:]}")
    if "digest" in text or "checksum" in text or "unexpected eof" in text or "invalid tar header" in text:
        return ImageArchiveError(
            "the container engine found the image archive damaged (a layer does not match its digest or is cut "
            "short): save the image again with `docker save <image> | gzip -c > image.tar.gz` and upload that file"
        )
    return ImageArchiveError(
        "the container engine could not load the image archive: save it with `docker save <image> -o image.tar` "
        "(or `docker save <image> | gzip -c > image.tar.gz`) from a linux/amd64 build and upload that file"
    )


def image_exists(reference: str, *, executable: str = "podman") -> bool:
    if executable == "podman":
        return _engine(executable, "image", "exists", reference).returncode == 0
    return _engine(executable, "image", "inspect", reference).returncode == 0


def load_image(path: Path, archive: ImageArchive, *, executable: str = "podman") -> str:
    """Load the archive validated as `archive` (plain tar; see `decompress`) unless its image is there."""
    if image_exists(archive.image_id, executable=executable):
        logger.info("image %s is already in the engine: reused", archive.image_id[:12])
        return archive.image_id
    if is_gzip(path):
        raise SandboxError(f"{path.name} is gzip-compressed: decompress it before loading (engine.decompress)")
    for tag in archive.repo_tags:
        if image_exists(tag, executable=executable):
            raise ImageArchiveError(f"the image name {tag!r} is reserved on the evaluation host; rename it")
    if executable == "podman":
        done = _engine(executable, "pull", "-q", f"docker-archive:{path}", timeout=_TIMEOUT_S)
    else:
        done = _engine(executable, "load", "-q", "-i", str(path), timeout=_TIMEOUT_S)
    if done.returncode != 0:
        # Organisers read the engine's own words; the participant gets what to do.
        logger.warning("%s could not load %s: %s", executable, path.name, done.stderr.strip()[-4000:])
        raise engine_failure(done.stderr)
    if not image_exists(archive.image_id, executable=executable):
        raise SandboxError(f"loaded image archive did not produce image {archive.image_id[:12]}")
    if executable == "podman":
        for tag in archive.repo_tags:
            _engine(executable, "untag", archive.image_id, tag)
    else:
        # Docker has no untag: hold the image by a tag of ours, drop the archive's names, and `remove_image`
        # (by id, forced) removes the image with ours after the run.
        _engine(executable, "tag", archive.image_id, f"midog-submission:{archive.image_id[:32]}")
        for tag in archive.repo_tags:
            _engine(executable, "rmi", tag)
    return archive.image_id


def remove_image(image_id: str, *, executable: str = "podman") -> None:
    _engine(executable, "rmi", "--force", image_id)


def release_image(image_id: str, *, ledger: Path, keep: int, executable: str = "podman") -> list[str]:
    """Record that a run of `image_id` ended; remove participant images beyond the `keep` latest used.

    The ledger (JSON id -> last use) lists only images this worker loaded, so nothing else is ever removed.
    Returns the ids removed.
    """
    if keep <= 0:
        remove_image(image_id, executable=executable)
        return [image_id]
    ledger.parent.mkdir(parents=True, exist_ok=True)
    with (ledger.with_suffix(".lock")).open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        used: dict[str, float] = {}
        with contextlib.suppress(OSError, ValueError):
            used = {str(k): float(v) for k, v in json.loads(ledger.read_text(encoding="utf-8")).items()}
        used[image_id] = time.time()
        latest = sorted(used, key=lambda key: used[key], reverse=True)
        removed = latest[keep:]
        for old in removed:
            remove_image(old, executable=executable)
            used.pop(old)
        temporary = ledger.with_suffix(".tmp")
        temporary.write_text(json.dumps(used), encoding="utf-8")
        temporary.replace(ledger)
    return removed
