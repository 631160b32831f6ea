"""Running this worker's own Python stack inside the sandbox (our inference runtime, not participant code).

`python_runtime(packages)` returns the read-only mounts that make the worker's interpreter, its virtual
environment and the named top-level packages importable at the same paths inside a sandbox, plus the
interpreter to start. Only those directories are mounted: not the repository around them, its
configuration or any data. A sandbox built from the host's /usr (bwrap, or an image with /usr mounted)
needs nothing more when the interpreter lives under /usr.

Imports the stdlib and worker.sandbox only; must not import Celery, SQLAlchemy, FastAPI or torch.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from worker.sandbox.spec import Mount, SandboxError


def _covered(path: Path, roots: list[Path]) -> bool:
    return any(path == root or root in path.parents for root in roots)


def python_runtime(packages: Sequence[str] = ("worker",)) -> tuple[tuple[Mount, ...], str]:
    """(mounts, interpreter path) for running `python -m <package.module>` in a sandbox."""
    roots: list[Path] = []
    for prefix in dict.fromkeys((Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve())):
        if not _covered(prefix, [Path("/usr"), *roots]):
            roots.append(prefix)
    for name in packages:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise SandboxError(f"package {name!r} is not importable here")
        location = Path(next(iter(spec.submodule_search_locations))).resolve()
        if not _covered(location, roots):
            roots.append(location)
    interpreter = os.path.realpath(sys.executable) if sys.prefix == sys.base_prefix else sys.executable
    return tuple(Mount(root, str(root)) for root in roots), interpreter
