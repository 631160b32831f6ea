"""Tiny OCI images for the sandbox and container tests, built without a registry.

A busybox-static root filesystem (plus `/lib`, `/lib64` links so that a read-only bind of the host's /usr
can supply Python) is written as a tar and imported with `podman import`, or built with `podman build`
FROM scratch when the image needs a USER, an ENTRYPOINT or a script. Helpers also check that a backend
is usable: in CI (env CI=true) a missing backend is a failure, elsewhere a skip.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import tarfile
import time
from collections.abc import Iterable
from pathlib import Path

import pytest

from tests.live_server import descendants, still_running
from worker.safe_delete import remove_tree
from worker.sandbox import SandboxError, get_backend

BUSYBOX = Path("/usr/bin/busybox")
APPLETS = ("sh", "cat", "echo", "ls", "sleep", "head", "dd", "test", "[", "printf", "wc", "id", "env", "mkdir")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def unavailable(message: str) -> None:
    if in_ci():
        pytest.fail(message + " (CI requires it: .ci/services.sh installs it)")
    pytest.skip(message)


def require_backend(name: str) -> None:
    try:
        get_backend(name).check()
    except SandboxError as exc:
        unavailable(str(exc))
    if name == "podman":
        done = subprocess.run(["podman", "info"], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            unavailable(f"podman does not work here: {done.stderr.strip()[-300:]}")
    if not BUSYBOX.exists():
        unavailable("busybox-static is needed to build the test images")


def _add(
    tar: tarfile.TarFile,
    name: str,
    *,
    data: bytes | None = None,
    link: str | None = None,
    mode: int = 0o755,
    directory: bool = False,
) -> None:
    info = tarfile.TarInfo(name)
    info.mode = mode
    if directory:
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    elif link is not None:
        info.type = tarfile.SYMTYPE
        info.linkname = link
        tar.addfile(info)
    else:
        assert data is not None
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def busybox_rootfs(files: dict[str, bytes] | None = None) -> bytes:
    """A root filesystem tar: busybox with its applets in /bin, empty /usr (for a bind), extra files."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for directory in ("bin", "usr", "tmp", "etc", "input", "output", "proc", "dev", "sys", "probes"):
            _add(tar, directory, directory=True, mode=0o1777 if directory == "tmp" else 0o755)
        _add(tar, "bin/busybox", data=BUSYBOX.read_bytes())
        for applet in APPLETS:
            _add(tar, f"bin/{applet}", link="busybox")
        _add(tar, "lib", link="usr/lib")
        _add(tar, "lib64", link="usr/lib64")
        _add(tar, "etc/passwd", data=b"root:x:0:0::/:/bin/sh\nrunner:x:10001:10001::/tmp:/bin/sh\n", mode=0o644)
        for name, data in (files or {}).items():
            _add(tar, name, data=data)
    return buffer.getvalue()


def image_exists(reference: str) -> bool:
    return subprocess.run(["podman", "image", "exists", reference], check=False).returncode == 0


def import_rootfs(reference: str, rootfs: bytes, workdir: Path) -> str:
    """`podman import` the tar as `reference` unless an image of that content is there already."""
    digest = hashlib.sha256(rootfs).hexdigest()[:12]
    tagged = f"{reference}:{digest}"
    if not image_exists(tagged):
        path = workdir / f"rootfs-{digest}.tar"
        path.write_bytes(rootfs)
        subprocess.run(["podman", "import", "-q", str(path), tagged], check=True, capture_output=True)
    return tagged


def build_image(reference: str, containerfile: str, files: dict[str, bytes], workdir: Path) -> str:
    """`podman build` FROM scratch over the busybox rootfs; returns the tagged reference."""
    context = workdir / f"context-{hashlib.sha256(containerfile.encode()).hexdigest()[:8]}"
    if context.exists():
        remove_tree(context)
    context.mkdir(parents=True)
    (context / "rootfs.tar").write_bytes(busybox_rootfs(files))
    (context / "Containerfile").write_text("FROM scratch\nADD rootfs.tar /\n" + containerfile)
    digest = hashlib.sha256((context / "rootfs.tar").read_bytes() + containerfile.encode()).hexdigest()[:12]
    tagged = f"{reference}:{digest}"
    if not image_exists(tagged):
        subprocess.run(
            ["podman", "build", "-q", "--runtime", "runc", "-t", tagged, str(context)],
            check=True,
            capture_output=True,
        )
    return tagged


def uid_processes(uid: int) -> list[int]:
    """Pids of host processes whose real uid is `uid` (the sandbox uid): leftovers of a run."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        # A zombie has exited and holds no resources; it only waits for its new parent to collect it.
        if int(fields.get("Uid", "-1").split()[0]) == uid and not fields.get("State", "").strip().startswith("Z"):
            found.append(int(entry.name))
    return found


def _uid(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Uid:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _cgroup_lines(pid: int | str) -> set[str]:
    try:
        return {line.split(":", 1)[1] for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines() if ":" in line}
    except OSError:
        return set()


def label_processes(uid: int, label: str, container_ids: Iterable[str] = ()) -> list[int]:
    """Live processes of `uid` that belong to runs labelled `label`: in a bubblewrap run's cgroup of that label
    (`midog-sandbox/<label>-<run id>`), in the cgroup of one of `container_ids` (podman's `libpod-<id>`), or
    descendants of this test process. Other tests' runs of the same sandbox uid are not counted (labels are
    unique per test)."""
    mine = set(descendants(os.getpid()))
    markers = [f"midog-sandbox/{label}-", *(f"libpod-{cid}" for cid in container_ids)]
    return [
        pid
        for pid in uid_processes(uid)
        if pid in mine or any(marker in line for line in _cgroup_lines(pid) for marker in markers)
    ]


class RunProcesses:
    """The processes of the sandboxed runs started under one root process (a serve, a worker, a runner
    service), and nothing else on the machine: other tests' or other users' runs of the same sandbox uid are
    not counted. A run is known by its processes (descendants of the root with the sandbox uid) and by the
    per-run cgroups they are in, so a process that outlived its parent (reparented away from the root) is
    still found in its run's cgroup."""

    def __init__(self, root: int, uid: int) -> None:
        self.root = root
        self.uid = uid
        self.processes: dict[int, str] = {}
        self.cgroups: set[str] = set()

    def look(self) -> list[int]:
        """Note the runs under the root now; returns the sandbox-uid pids found."""
        found = {pid: start for pid, start in descendants(self.root).items() if _uid(pid) == self.uid}
        own = _cgroup_lines("self")
        for pid in found:
            # The run's own cgroups: those its processes are in and this test process is not.
            self.cgroups |= _cgroup_lines(pid) - own
        self.processes.update(found)
        return list(found)

    def left(self) -> list[int]:
        """Noted processes still running, and any live process in a noted run's cgroup."""
        alive = set(still_running(self.processes))
        if self.cgroups:
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit() and _cgroup_lines(entry.name) & self.cgroups:
                    try:
                        state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                    except OSError:
                        continue
                    if state != "Z":
                        alive.add(int(entry.name))
        return sorted(alive)

    def wait_started(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while not self.look() and time.monotonic() < deadline:
            time.sleep(0.05)
        return bool(self.processes)

    def wait_gone(self, timeout_s: float) -> list[int]:
        deadline = time.monotonic() + timeout_s
        while (left := self.left()) and time.monotonic() < deadline:
            time.sleep(0.1)
        return left
