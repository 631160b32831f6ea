"""Fixtures for the sandbox scenarios: each test runs against bwrap, podman, and podman in a user namespace
(as container submissions run: the sandbox uid is a host id from USERNS_BASE up)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.sandbox.images import busybox_rootfs, import_rootfs, require_backend
from worker.safe_delete import discard_tree
from worker.sandbox import Backend, BwrapBackend, Mount, PodmanBackend, SandboxSpec

PROBES = Path(__file__).resolve().parents[1] / "probes"
# A uid no other process on the test host uses, so leftovers of a run can be found by uid.
SANDBOX_UID = 23456


@pytest.fixture(scope="session")
def runtime_dir() -> Iterator[Path]:
    # Not under pytest's 0700 tmp dirs: the sandbox uid must be able to reach its output area.
    path = Path(tempfile.mkdtemp(prefix="midog-sandbox-tests-"))
    path.chmod(0o755)
    yield path
    discard_tree(path)


@pytest.fixture(scope="session")
def busybox_image(tmp_path_factory: pytest.TempPathFactory) -> str:
    require_backend("podman")
    return import_rootfs("localhost/midog-test/busybox", busybox_rootfs(), tmp_path_factory.mktemp("images"))


# podman-userns: as container submissions run, the sandbox uid inside a user namespace (host ids from this base).
USERNS_BASE = 1_000_000_000


@pytest.fixture(params=["bwrap", "podman", "podman-userns"])
def backend_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def backend(request: pytest.FixtureRequest, backend_kind: str, runtime_dir: Path) -> Backend:
    require_backend(backend_kind.partition("-")[0])
    if backend_kind == "bwrap":
        return BwrapBackend(runtime_dir=runtime_dir)
    request.getfixturevalue("busybox_image")
    return PodmanBackend(runtime_dir=runtime_dir)


@pytest.fixture
def make_spec(request: pytest.FixtureRequest, backend: Backend) -> Callable[..., SandboxSpec]:
    """SandboxSpec factory with small limits; /probes mounted, and /usr for podman (Python comes from it)."""

    def make(*, mounts: tuple[Mount, ...] = (), **overrides: Any) -> SandboxSpec:
        base: tuple[Mount, ...] = (Mount(PROBES, "/probes"),)
        if isinstance(backend, PodmanBackend):
            base += (Mount(Path("/usr"), "/usr"),)
        values: dict[str, Any] = {
            "label": f"test-{os.getpid()}-{abs(hash(request.node.nodeid)) % 10**8}",
            "wall_seconds": 30.0,
            "uid": SANDBOX_UID,
            "gid": SANDBOX_UID,
            "memory_bytes": 256 * 1024**2,
            "pids": 64,
            "tmp_bytes": 16 * 1024**2,
            "output_bytes": 1024**2,
            "output_files": 64,
            "mounts": base + mounts,
        }
        if isinstance(backend, PodmanBackend):
            values["image"] = request.getfixturevalue("busybox_image")
        if request.getfixturevalue("backend_kind") == "podman-userns":
            values["userns_base"] = USERNS_BASE
        values.update(overrides)
        return SandboxSpec(**values)

    return make
