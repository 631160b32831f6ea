"""What the crash-safety tests check on the host: mounts that findmnt lists, and sentinels over mounted trees.

A plain module shared by the test folders (import it as `tests.host_checks`), not a test file.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path


def host_mounts_under(*directories: Path) -> list[str]:
    """Mount points at or below any of `directories` in this (the host's) mount namespace, as findmnt lists them."""
    listed = subprocess.run(["findmnt", "-rn", "-o", "TARGET"], capture_output=True, text=True, check=True).stdout
    tops = [str(d.resolve()) for d in directories]
    return [m for m in listed.splitlines() if any(m == t or m.startswith(t + "/") for t in tops)]


def fingerprint(root: Path, sample: int = 300) -> tuple[int, str]:
    """(file count, digest of the first `sample` files' paths and contents): a sentinel over a mounted tree.

    Bytecode caches are left out: the host's own Python processes write them as they first import a module.
    """
    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and not p.is_symlink() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    )
    digest = hashlib.sha256()
    for path in files[:sample]:
        digest.update(str(path).encode())
        digest.update(path.read_bytes())
    return len(files), digest.hexdigest()


def sentinels(*extra: Path) -> dict[Path, tuple[int, str]]:
    """Fingerprints of every host directory a model run mounts (the interpreter's installation, the virtual
    environment, the worker package) and of `extra` (a test set's images)."""
    from worker.sandbox.runtime import python_runtime

    mounts, _ = python_runtime(("worker",))
    return {source: fingerprint(source) for source in [*(m.source for m in mounts), *extra]}
