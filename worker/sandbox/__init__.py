"""The sandbox every piece of participant code runs in: one SandboxSpec, three backends.

`get_backend("bwrap" | "podman" | "docker")` returns an object with `check()`, `problem()` (why it cannot
run participant code on this host, for the worker's capability report), `run(spec, argv, *, output_dir)
-> SandboxResult`, `reap(label) -> int` and `leftover_labels()` (for a start-up sweep). The
backend is a worker setting; docker shares the podman code path and flags. Imports the stdlib only; must
not import Celery, SQLAlchemy, FastAPI or torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

from worker.sandbox.bwrap import BwrapBackend
from worker.sandbox.podman import DockerBackend, PodmanBackend, gpu_present
from worker.sandbox.spec import (
    MEMORY_LIMIT,
    OUTPUT_LIMIT,
    TIME_LIMIT,
    Mount,
    SandboxError,
    SandboxResult,
    SandboxSpec,
    Scratch,
)

BACKENDS = ("bwrap", "podman", "docker")


class Backend(Protocol):
    name: str

    def check(self) -> None: ...

    def problem(self) -> str | None: ...

    def run(self, spec: SandboxSpec, argv: Sequence[str], *, output_dir: Path) -> SandboxResult: ...

    def reap(self, label: str) -> int: ...

    def leftover_labels(self) -> list[str]: ...


def parse_host_paths(text: str) -> dict[str, str]:
    """`MIDOG_SANDBOX_HOST_PATHS`: comma-separated `worker path=host path` pairs, e.g. `/test-sets=/srv/sets`."""
    pairs: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        inside, sep, host = item.partition("=")
        if not sep or not inside.startswith("/") or not host.startswith("/"):
            raise SandboxError(f"MIDOG_SANDBOX_HOST_PATHS entry {item!r} is not '/worker/path=/host/path'")
        pairs[inside] = host
    return pairs


def get_backend(
    name: str,
    *,
    runtime_dir: Path | None = None,
    host_paths: Mapping[str, str] | None = None,
    runner_socket: Path | None = None,
    allowed_missing: frozenset[str] = frozenset(),
) -> Backend:
    """The backend named by the worker setting; `host_paths` only concerns podman/docker (see PodmanBackend).

    `runner_socket`: run through the sandbox runner service (worker.sandbox.remote) listening there (an
    unprivileged worker, MIDOG_SANDBOX_RUNNER_SOCKET); None: here, in this process. `allowed_missing`: the
    isolation controls bwrap may run without (worker.sandbox.isolation; none unless the deployment says so).
    """
    if runner_socket is not None:
        from worker.sandbox.remote import RemoteBackend

        if name not in BACKENDS:
            raise SandboxError(f"unknown sandbox backend {name!r}; choose one of {', '.join(BACKENDS)}")
        return RemoteBackend(name, runner_socket)
    if name == "bwrap":
        return BwrapBackend(runtime_dir=runtime_dir, allowed_missing=allowed_missing)
    if name == "podman":
        return PodmanBackend(runtime_dir=runtime_dir, host_paths=host_paths)
    if name == "docker":
        return DockerBackend(runtime_dir=runtime_dir, host_paths=host_paths)
    raise SandboxError(f"unknown sandbox backend {name!r}; choose one of {', '.join(BACKENDS)}")


__all__ = [
    "BACKENDS",
    "MEMORY_LIMIT",
    "OUTPUT_LIMIT",
    "TIME_LIMIT",
    "Backend",
    "BwrapBackend",
    "DockerBackend",
    "Mount",
    "PodmanBackend",
    "SandboxError",
    "SandboxResult",
    "SandboxSpec",
    "Scratch",
    "get_backend",
    "gpu_present",
    "parse_host_paths",
]
