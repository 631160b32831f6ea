"""Loading a validated image archive into the worker's container engine, and removing it afterwards.

podman reads the archive through the explicit `docker-archive:` transport, so only what manifest.json
describes (the single image validation checked) is loaded, never another format hidden in the same tar.
The archive's RepoTags would name the image on the host: a tag that already exists (one of the worker's
own images) is refused, and after loading every tag is removed, so participant images are known by id only.

Imports the stdlib, worker.containers and worker.sandbox only.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from worker.containers.archive import ImageArchive, ImageArchiveError
from worker.sandbox.spec import SandboxError

_TIMEOUT_S = 1800.0


def _engine(executable: str, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run([executable, *args], capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise SandboxError(f"{executable} {args[0]} did not finish in {timeout:.0f} s") from exc


def image_exists(reference: str, *, executable: str = "podman") -> bool:
    if executable == "podman":
        return _engine(executable, "image", "exists", reference).returncode == 0
    return _engine(executable, "image", "inspect", reference).returncode == 0


def load_image(path: Path, archive: ImageArchive, *, executable: str = "podman") -> str:
    """Load the archive validated as `archive`; returns the image id (sha256 hex of its config)."""
    for tag in archive.repo_tags:
        if image_exists(tag, executable=executable) and not image_exists(archive.image_id, executable=executable):
            raise ImageArchiveError(f"the image name {tag!r} is reserved on the evaluation host; rename it")
    if executable == "podman":
        done = _engine(executable, "pull", "-q", f"docker-archive:{path}", timeout=_TIMEOUT_S)
    else:
        done = _engine(executable, "load", "-q", "-i", str(path), timeout=_TIMEOUT_S)
    if done.returncode != 0:
        raise ImageArchiveError("the container engine could not load the image archive")
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
