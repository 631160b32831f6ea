"""What a sandboxed run is allowed (SandboxSpec) and what came out of it (SandboxResult).

Plain dataclasses shared by every backend. Imports the stdlib and worker.errors only; must not import
Celery, SQLAlchemy, FastAPI or torch.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from worker.errors import RetryableError

TIME_LIMIT = "time limit exceeded"
MEMORY_LIMIT = "memory limit exceeded"
OUTPUT_LIMIT = "output size limit exceeded"
PIDS_LIMIT = "process limit exceeded"

_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Paths end up in `-v src:dst:ro` and in bwrap arguments; these characters would change their meaning.
_UNSAFE_PATH = re.compile(r"[:,\x00\n]")
# Environment every backend sets on its own; anything else inside the sandbox comes from SandboxSpec.env.
BASE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8"}


class SandboxError(RetryableError, RuntimeError):
    """The sandbox itself could not run (engine failure, missing backend, bad spec): an infrastructure fault,
    never the participant's; the pipeline retries it up to the attempt cap."""


@dataclass(frozen=True)
class Mount:
    """A host path bound read-only at `target` inside the sandbox."""

    source: Path
    target: str

    def __post_init__(self) -> None:
        if not self.target.startswith("/") or ".." in self.target.split("/"):
            raise SandboxError(f"mount target must be an absolute path without '..': {self.target!r}")
        if self.target.rstrip("/") in {"", "/output", "/tmp", "/proc", "/dev"}:
            raise SandboxError(f"mount target {self.target!r} is reserved by the sandbox")
        for text in (str(self.source), self.target):
            if _UNSAFE_PATH.search(text):
                raise SandboxError(f"mount path contains ':' ',' or a control character: {text!r}")


@dataclass(frozen=True)
class Scratch:
    """A writable, size-limited tmpfs at `target`, owned by the sandbox user (containers only).

    It starts as a copy of what the image holds there (podman's tmpfs copy-up), so a HOME with packages
    installed by `pip install --user` keeps them; everything written is gone after the run.
    """

    target: str
    size_bytes: int

    def __post_init__(self) -> None:
        if not self.target.startswith("/") or ".." in self.target.split("/") or _UNSAFE_PATH.search(self.target):
            raise SandboxError(f"scratch target must be an absolute path without '..', ':' or ',': {self.target!r}")
        if self.target.rstrip("/") in {"", "/output", "/tmp", "/proc", "/dev", "/sys", "/input"}:
            raise SandboxError(f"scratch target {self.target!r} is reserved by the sandbox")
        if self.size_bytes <= 0:
            raise SandboxError("scratch size_bytes must be positive")


@dataclass(frozen=True)
class SandboxSpec:
    """Everything a backend needs to run participant code; no network is ever given.

    `label` keys the run for reaping (one evaluation may use the same label for all its runs);
    `labels` are extra key=value tags (the evaluation id) put on containers and in the bwrap state.
    `image` is required by the container backends and ignored by bwrap, which builds its root from
    read-only binds of the host's /usr plus `mounts`. Only /output (bounded by `output_bytes` and
    `output_files`) and /tmp (tmpfs of `tmp_bytes`) are writable. `env` is the complete environment
    allow-list: nothing of the worker's environment is passed on besides BASE_ENV.
    """

    label: str
    wall_seconds: float
    image: str | None = None
    mounts: tuple[Mount, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    uid: int = 10001
    gid: int = 10001
    memory_bytes: int = 2 * 1024**3
    pids: int = 128
    cpus: float = 1.0
    shm_bytes: int = 64 * 1024**2
    tmp_bytes: int = 256 * 1024**2
    output_bytes: int = 64 * 1024**2
    output_files: int = 1024
    nofile: int = 1024
    gpu: int | None = None
    # None: the image's own WORKDIR (containers); bwrap then starts in /tmp.
    workdir: str | None = "/tmp"
    # False: only `env` is set, so an image's own ENV (PATH of a conda image...) stays in force.
    base_env: bool = True
    # Bytes of stdout and stderr kept (the last ones) for organisers; participants never see them.
    log_tail_bytes: int = 64 * 1024
    # Supplementary groups of the sandbox user (the image's /etc/group), none of them 0.
    groups: tuple[int, ...] = ()
    # Containers: the host uid/gid that the container's 0 maps to (a user namespace of `userns_size` ids),
    # so that uid/gid above are the image's own ids and never host ids; None: no user namespace.
    userns_base: int | None = None
    userns_size: int = 65536
    # Containers: writable tmpfs directories besides /tmp and /output (HOME, /opt/ml/...).
    scratch: tuple[Scratch, ...] = ()
    # Containers: stdout and stderr drained through one pipe, so `stdout_tail` holds both in order.
    merge_output: bool = False

    def __post_init__(self) -> None:
        if not _LABEL.match(self.label):
            raise SandboxError(f"sandbox label must match {_LABEL.pattern}: {self.label!r}")
        for key, value in self.labels.items():
            if not _LABEL.match(key) or _UNSAFE_PATH.search(value) or "=" in key:
                raise SandboxError(f"bad sandbox label {key!r}={value!r}")
        for name in self.env:
            if not _ENV_NAME.match(name):
                raise SandboxError(f"bad environment variable name {name!r}")
        if self.uid <= 0 or self.gid <= 0 or any(g <= 0 for g in self.groups):
            raise SandboxError("sandboxed code must run with a non-root uid, gid and groups")
        if self.userns_base is not None:
            if self.userns_base < 65536 or self.userns_size < 1:
                raise SandboxError("userns_base must be an unprivileged host id range (65536 or above)")
            if max(self.uid, self.gid, *self.groups) >= self.userns_size:
                raise SandboxError(f"uid, gid and groups must be below the user namespace size {self.userns_size}")
        if self.wall_seconds <= 0:
            raise SandboxError("wall_seconds must be positive")
        for name in (
            "memory_bytes",
            "pids",
            "shm_bytes",
            "tmp_bytes",
            "output_bytes",
            "output_files",
            "nofile",
        ):
            if getattr(self, name) <= 0:
                raise SandboxError(f"{name} must be positive")
        if self.cpus <= 0:
            raise SandboxError("cpus must be positive")

    def environment(self) -> dict[str, str]:
        """The full environment of the sandboxed process."""
        return {**BASE_ENV, **self.env} if self.base_env else dict(self.env)


@dataclass(frozen=True)
class SandboxResult:
    """The outcome of one run. The tails are for organisers only; `reason` is safe to show anyone."""

    exit_code: int | None
    timed_out: bool
    memory_exceeded: bool
    output_exceeded: bool
    wall_seconds: float
    output_dir: Path
    stdout_tail: str = ""
    stderr_tail: str = ""
    pids_exceeded: bool = False

    @property
    def ok(self) -> bool:
        return self.reason is None

    def participant_reason(self, *, hidden: bool) -> str | None:
        """`reason`, except that in a hidden phase an exit status or signal becomes "the program failed".

        The code chooses its exit status freely; shown in a hidden phase it would carry a byte of hidden
        data out per submission. The limits are reported as they are (they are the runner's verdicts).
        """
        reason = self.reason
        if hidden and reason is not None and reason.startswith("the program"):
            return "the program failed"
        return reason

    @property
    def reason(self) -> str | None:
        """One participant-readable line, built only from flags and the exit code, never from output."""
        if self.timed_out:
            return TIME_LIMIT
        if self.memory_exceeded:
            return MEMORY_LIMIT
        if self.output_exceeded:
            return OUTPUT_LIMIT
        if self.exit_code == 0:
            return None
        if self.pids_exceeded:
            return PIDS_LIMIT
        if self.exit_code is None:
            return "the program did not report an exit status"
        if self.exit_code > 128:
            return f"the program was killed by signal {self.exit_code - 128}"
        return f"the program exited with status {self.exit_code}"
