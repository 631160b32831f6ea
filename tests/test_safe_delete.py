"""worker.safe_delete: deleting a tree never crosses a mount point or another file system (R10).

The mount tests bind a directory of sentinel files into the tree to be deleted, as a crashed sandbox run of an
earlier release left them, and check that every sentinel survives with its content. They need root (mount);
CI runs as root.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from worker.safe_delete import CrossesMountError, discard_tree, mount_points, mounts_below, remove_tree
from worker.sandbox.output import remove_run_directory

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="bind mounts need root (CI runs as root)")


def digest_tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def sentinels(tmp_path: Path) -> Path:
    source = tmp_path / "host-data"
    (source / "site-packages" / "pkg").mkdir(parents=True)
    (source / "site-packages" / "pkg" / "__init__.py").write_text("VALUE = 1\n")
    (source / "images").mkdir()
    (source / "images" / "001.tiff").write_bytes(os.urandom(4096))
    return source


@pytest.fixture
def bound(tmp_path: Path, sentinels: Path) -> Iterator[Path]:
    """A run directory with `sentinels` bind-mounted (read-write) at run/mount-0, unmounted afterwards."""
    run = tmp_path / "run"
    stage = run / "mount-0"
    stage.mkdir(parents=True)
    (run / "output").mkdir()
    (run / "output" / "x.json").write_text("{}")
    subprocess.run(["mount", "--bind", str(sentinels), str(stage)], check=True)
    try:
        yield run
    finally:
        subprocess.run(["umount", "-l", str(stage)], check=False)


def test_removes_an_ordinary_tree_and_links_without_following_them(tmp_path: Path, sentinels: Path) -> None:
    before = digest_tree(sentinels)
    tree = tmp_path / "tree"
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "a" / "b" / "f.txt").write_text("x")
    (tree / "link-to-data").symlink_to(sentinels)
    (tree / "a" / "file-link").symlink_to(sentinels / "images" / "001.tiff")
    remove_tree(tree)
    assert not tree.exists()
    assert digest_tree(sentinels) == before
    remove_tree(tree)  # missing is fine by default
    with pytest.raises(FileNotFoundError):
        remove_tree(tree, missing_ok=False)


def test_a_link_at_the_top_is_removed_itself(tmp_path: Path, sentinels: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to(sentinels)
    remove_tree(link)
    assert not link.is_symlink()
    assert (sentinels / "images" / "001.tiff").is_file()


def test_mountinfo_escapes_are_decoded(tmp_path: Path) -> None:
    info = tmp_path / "mountinfo"
    info.write_text("22 1 8:1 / / rw - ext4 /dev/sda1 rw\n23 22 0:5 / /srv/with\\040space/run rw - tmpfs tmpfs rw\n")
    assert mount_points(info) == ["/", "/srv/with space/run"]
    assert mounts_below(Path("/srv/with space"), info) == ["/srv/with space/run"]
    assert mounts_below(Path("/srv/with"), info) == []


@needs_root
def test_a_bind_mount_inside_stops_the_deletion_before_anything_goes(bound: Path, sentinels: Path) -> None:
    before = digest_tree(sentinels)
    with pytest.raises(CrossesMountError, match="mount-0 is a mount point inside it"):
        remove_tree(bound)
    assert digest_tree(sentinels) == before
    # Nothing of the tree went either: the refusal comes before the first deletion.
    assert (bound / "output" / "x.json").is_file()
    assert discard_tree(bound) is False
    assert digest_tree(sentinels) == before


@needs_root
def test_another_file_system_met_during_the_walk_is_refused(tmp_path: Path, sentinels: Path) -> None:
    """A mount this process's mountinfo would not list (another namespace's view) is caught by the device."""
    tree = tmp_path / "tree"
    inner = tree / "inner"
    inner.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "sentinel-fs", str(inner)], check=True)
    try:
        (inner / "keep.txt").write_text("keep")
        import worker.safe_delete as module

        # Blind the up-front mountinfo check, as if the mount were invisible from here.
        original = module.mount_points
        module.mount_points = lambda mountinfo=module.MOUNTINFO: []
        try:
            with pytest.raises(CrossesMountError, match="something is mounted there"):
                remove_tree(tree)
        finally:
            module.mount_points = original
        assert (inner / "keep.txt").read_text() == "keep"
    finally:
        subprocess.run(["umount", str(inner)], check=True)


@needs_root
def test_a_run_directory_with_a_leftover_mount_is_detached_then_deleted(bound: Path, sentinels: Path) -> None:
    """What the sandbox reaper does with runs of earlier releases: detach, then delete; the source is intact."""
    before = digest_tree(sentinels)
    assert remove_run_directory(bound) is True
    assert not bound.exists()
    assert mounts_below(bound.parent) == []
    assert digest_tree(sentinels) == before
