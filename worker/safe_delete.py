"""Deleting directory trees that never crosses into another file system or a mount point.

A bind mount inside a directory makes its source part of the tree: a plain recursive delete of the
directory empties the source (a Python installation, a virtual environment, a test set). `remove_tree`
therefore refuses, before it deletes anything, when a mount point lies at or below the path (read from
/proc/self/mountinfo: bind mounts of the same file system share its device number), and while it walks it
refuses every directory whose device differs from the top's, or whose inode differs from the one its parent
lists for it (the sign of a mount on it: a mount that appeared meanwhile, or one this process cannot see in
mountinfo). Symbolic links are removed, never followed. Everything it deletes is
opened relative to a directory descriptor, so a directory swapped for a link mid-walk is not followed either.

Every place that deletes a tree the product created (the demo's runtime directory, the sandbox reapers,
the sweeper, the tests) goes through here. Imports the stdlib only.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

MOUNTINFO = Path("/proc/self/mountinfo")
logger = logging.getLogger(__name__)


class CrossesMountError(OSError):
    """The tree holds a mount point or another file system; nothing below it was touched."""


def _unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash as \040, \011, \012 and \134.
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mount_points(mountinfo: Path = MOUNTINFO) -> list[str]:
    """The mount points this process sees (field 5 of each mountinfo line, unescaped)."""
    try:
        lines = mountinfo.read_text(encoding="utf-8", errors="surrogateescape").splitlines()
    except OSError:
        return []
    return [_unescape(line.split()[4]) for line in lines if len(line.split()) > 4]


def mounts_below(path: Path, mountinfo: Path = MOUNTINFO) -> list[str]:
    """Mount points at `path` or anywhere below it."""
    top = os.path.realpath(path)
    prefix = top.rstrip("/") + "/"
    return sorted(m for m in mount_points(mountinfo) if m == top or m.startswith(prefix))


def remove_tree(path: Path | str, *, missing_ok: bool = True) -> None:
    """Delete `path` and everything below it, staying on its file system; raise CrossesMountError otherwise.

    A symbolic link at `path` is removed itself. Raises FileNotFoundError for a missing path unless
    `missing_ok`.
    """
    path = Path(path)
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        if missing_ok:
            return
        raise
    if not stat.S_ISDIR(info.st_mode):
        path.unlink(missing_ok=missing_ok)
        return
    found = mounts_below(path)
    if found:
        raise CrossesMountError(
            errno.EBUSY,
            f"refusing to delete {path}: {', '.join(found)} is a mount point inside it; unmount it first",
        )
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        _empty_directory(fd, info.st_dev, os.path.realpath(path))
    finally:
        os.close(fd)
    try:
        os.rmdir(path)
    except FileNotFoundError:
        if not missing_ok:
            raise


def _empty_directory(fd: int, device: int, shown: str) -> None:
    with os.scandir(fd) as entries:
        names = [(entry.name, entry.is_dir(follow_symlinks=False), entry.inode()) for entry in entries]
    for name, is_dir, listed_inode in names:
        where = f"{shown}/{name}"
        if not is_dir:
            try:
                os.unlink(name, dir_fd=fd)
            except FileNotFoundError:
                pass
            except IsADirectoryError:
                is_dir = True  # replaced by a directory since the listing
            if not is_dir:
                continue
        try:
            child = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
        except FileNotFoundError:
            continue
        except NotADirectoryError:
            os.unlink(name, dir_fd=fd)  # replaced by a file or a link since the listing
            continue
        try:
            opened = os.fstat(child)
            # A mount hides the directory its parent lists: the inode listed and the one opened differ. (Some
            # file systems, overlayfs among them, list other inode numbers anyway: mountinfo decides then.)
            hidden = opened.st_ino != listed_inode and where in mount_points()
            if opened.st_dev != device or hidden:
                raise CrossesMountError(errno.EXDEV, f"refusing to delete below {where}: something is mounted there")
            _empty_directory(child, device, where)
        finally:
            os.close(child)
        try:
            os.rmdir(name, dir_fd=fd)
        except FileNotFoundError:
            pass
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                raise CrossesMountError(errno.EBUSY, f"refusing to delete {where}: it is a mount point") from exc
            raise


def discard_tree(path: Path | str) -> bool:
    """`remove_tree` for clean-up paths: never raises; a refusal or an error is logged. True when removed."""
    try:
        remove_tree(path)
    except OSError as exc:
        logger.warning("left %s in place: %s", path, exc)
        return False
    return True


@contextmanager
def scratch_directory(*, prefix: str, parent: Path | None = None) -> Iterator[Path]:
    """A new private directory (mkdtemp), deleted with `discard_tree` when the block ends."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield path
    finally:
        discard_tree(path)
