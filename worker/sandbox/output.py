"""The size-bounded /output area of a run, its copy-out, and the per-run state directories used for reaping.

Quota enforcement, chosen in this order:
1. A size- and inode-limited tmpfs (needs CAP_SYS_ADMIN, i.e. a root worker), mounted ONLY inside the run's
   own mount namespace (worker.sandbox.mountns), never in the host's. The kernel refuses writes past the
   quota (ENOSPC), for one big file and for many small ones alike, with no race; the pages are charged to
   the memory cgroup of the writer, so a flood cannot exceed the memory limit either. The content is copied
   out inside that namespace before it ends.
2. Otherwise a plain directory watched every 0.2 s; the run is killed when the quota is passed. Backends
   add RLIMIT_FSIZE where they can so that one file cannot outgrow the quota between two looks.
Copy-out takes regular files and directories only (never follows links written by the participant). Run
directories are deleted with worker.safe_delete, which never crosses a mount point.

Imports the stdlib only; must not import Celery, SQLAlchemy, FastAPI or torch.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from worker.safe_delete import CrossesMountError, mounts_below, remove_tree

logger = logging.getLogger(__name__)
_MAX_DEPTH = 16
_POLL_SECONDS = 0.2


def unmount(path: Path) -> None:
    # Lazy detach: a process of a crashed run may still hold a file open; the memory is freed when it dies.
    subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def _usage(root: Path) -> tuple[int, int]:
    total, files = 0, 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in filenames + dirnames:
            try:
                info = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            files += 1
            # The larger of allocated and apparent size: sparse files count at their full length.
            total += max(info.st_blocks * 512, info.st_size)
    return total, files


class OutputArea:
    """The host directory bound read-write at /output inside the sandbox."""

    def __init__(
        self,
        path: Path,
        *,
        quota_bytes: int,
        max_files: int,
        uid: int,
        gid: int,
        use_tmpfs: bool = False,
    ) -> None:
        self.path = path
        self.quota_bytes = quota_bytes
        self.max_files = max_files
        self.uid, self.gid = uid, gid
        # Only worker.sandbox.mountns asks for the tmpfs: in the worker's own namespace it would be host-visible.
        self.use_tmpfs = use_tmpfs
        self.mounted = False
        self._watch_stop = threading.Event()
        self._watch_thread: threading.Thread | None = None
        self.watchdog_fired = False

    def create(self) -> None:
        self.path.mkdir(parents=True, exist_ok=False)
        if self.use_tmpfs:
            options = (
                f"size={self.quota_bytes},nr_inodes={self.max_files + 1},mode=0700,"
                f"uid={self.uid},gid={self.gid},nosuid,nodev"
            )
            done = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", options, "midog-output", str(self.path)],
                capture_output=True,
                check=False,
            )
            self.mounted = done.returncode == 0
            self.use_tmpfs = self.mounted
        if not self.mounted:
            os.chmod(self.path, 0o700)
            if os.geteuid() == 0:
                os.chown(self.path, self.uid, self.gid)

    def exceeded(self) -> bool:
        """Whether the participant hit the byte or file quota."""
        if self.watchdog_fired:
            return True
        if self.mounted:
            info = os.statvfs(self.path)
            return info.f_bfree == 0 or info.f_ffree == 0
        total, files = _usage(self.path)
        return total > self.quota_bytes or files > self.max_files

    def start_watchdog(self, on_exceeded: Callable[[], None]) -> None:
        """Poll the directory when the kernel does not enforce the quota; call on_exceeded once."""
        if self.mounted:
            return

        def watch() -> None:
            while not self._watch_stop.wait(_POLL_SECONDS):
                total, files = _usage(self.path)
                if total > self.quota_bytes or files > self.max_files:
                    self.watchdog_fired = True
                    on_exceeded()
                    return

        self._watch_thread = threading.Thread(target=watch, name="output-watchdog", daemon=True)
        self._watch_thread.start()

    def stop_watchdog(self) -> None:
        self._watch_stop.set()
        if self._watch_thread is not None:
            self._watch_thread.join()

    def copy_to(self, destination: Path) -> None:
        """Copy regular files and directories (at most the quota's worth) into destination."""
        destination.mkdir(parents=True, exist_ok=True)
        budget = [self.quota_bytes, self.max_files]
        self._copy_dir(self.path, destination, 0, budget)

    def _copy_dir(self, source: Path, destination: Path, depth: int, budget: list[int]) -> None:
        if depth > _MAX_DEPTH:
            return
        with os.scandir(source) as entries:
            for entry in entries:
                if budget[1] <= 0:
                    return
                budget[1] -= 1
                target = destination / entry.name
                if entry.is_dir(follow_symlinks=False):
                    target.mkdir(exist_ok=True)
                    self._copy_dir(Path(entry.path), target, depth + 1, budget)
                elif entry.is_file(follow_symlinks=False):
                    self._copy_file(Path(entry.path), target, budget)

    @staticmethod
    def _copy_file(source: Path, target: Path, budget: list[int]) -> None:
        try:
            fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return
        with os.fdopen(fd, "rb") as src:
            if not stat.S_ISREG(os.fstat(src.fileno()).st_mode):
                return
            with open(target, "wb") as dst:
                while budget[0] > 0:
                    chunk = src.read(min(1 << 20, budget[0]))
                    if not chunk:
                        break
                    dst.write(chunk)
                    budget[0] -= len(chunk)

    def destroy(self) -> None:
        remove_tree(self.path)


class RunDirectory:
    """runtime_dir/<backend>/<label>/<run id>/: state.json (what to reap) and the output area."""

    def __init__(self, runtime_dir: Path, backend: str, label: str) -> None:
        self.run_id = uuid.uuid4().hex[:12]
        self.path = runtime_dir / backend / label / self.run_id
        # Search-only for others, from the runtime directory down (whatever the worker's umask): the sandbox's
        # uid must reach its own output area and staged mounts below.
        runtime_dir.mkdir(parents=True, exist_ok=True)
        for directory in (runtime_dir, runtime_dir / backend, runtime_dir / backend / label, self.path):
            directory.mkdir(exist_ok=directory != self.path, mode=0o711)
            if directory.stat().st_uid == os.geteuid():
                directory.chmod(directory.stat().st_mode | 0o111)

    def write_state(self, state: dict[str, Any]) -> None:
        temporary = self.path / "state.json.tmp"
        temporary.write_text(json.dumps(state), encoding="utf-8")
        temporary.replace(self.path / "state.json")


def run_directories(runtime_dir: Path, backend: str, label: str) -> Iterator[Path]:
    base = runtime_dir / backend / label
    if base.is_dir():
        yield from sorted(p for p in base.iterdir() if p.is_dir())


def read_state(run_dir: Path) -> dict[str, Any]:
    try:
        loaded = json.loads((run_dir / "state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def remove_run_directory(run_dir: Path) -> bool:
    """Delete the run's directory and its label directory when empty; False (and a log line) when it is kept.

    Runs of earlier releases staged bind mounts in the host's namespace: such leftovers are detached first
    (a lazy unmount touches nothing below the mount). Whatever stays mounted keeps the directory, since
    below a mount lies somebody else's data.
    """
    for mount in mounts_below(run_dir):
        unmount(Path(mount))
    try:
        remove_tree(run_dir)
    except CrossesMountError as exc:
        logger.error("%s", exc)
        return False
    with contextlib.suppress(OSError):
        run_dir.parent.rmdir()
    return True
