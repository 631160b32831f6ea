"""Per-run cgroups for the bubblewrap backend: memory (swap included), pids and CPU limits, OOM detection.

Supports the v1 hierarchies (memory, pids, cpu mounted separately, as on hybrid hosts) and the unified v2
hierarchy. Each run gets its own leaf under the worker's own cgroup, so the worker's limits still nest
around it. A controller that cannot be used (read-only cgroupfs, not delegated) is left out, and the
backend falls back to rlimits for it; `RunCgroups.controllers` says which ones are in force.

Imports the stdlib only; must not import Celery, SQLAlchemy, FastAPI or torch.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
_CFS_PERIOD_US = 100_000


def _own_path(controller: str) -> str | None:
    """The worker's own cgroup path for a v1 controller ('' key for v2), from /proc/self/cgroup."""
    try:
        lines = Path("/proc/self/cgroup").read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            return path
    return None


def _write(path: Path, value: str) -> bool:
    try:
        path.write_text(value, encoding="ascii")
    except OSError:
        return False
    return True


def _is_v2() -> bool:
    return (CGROUP_ROOT / "cgroup.controllers").exists()


@dataclass
class RunCgroups:
    """The cgroup directories of one run (one per v1 controller, or one v2 directory)."""

    paths: dict[str, Path] = field(default_factory=dict)
    version: int = 1

    @property
    def controllers(self) -> set[str]:
        return set(self.paths)

    def procs_files(self) -> list[Path]:
        return [p / "cgroup.procs" for p in dict.fromkeys(self.paths.values())]

    def memory_oom_killed(self) -> bool:
        memory = self.paths.get("memory")
        if memory is None:
            return False
        events = memory / ("memory.events" if self.version == 2 else "memory.oom_control")
        try:
            for line in events.read_text(encoding="ascii").splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value) > 0
        except (OSError, ValueError):
            return False
        if self.version == 1:
            # Kernels without the oom_kill counter: a hit on the memory+swap limit means the limit was reached.
            try:
                return int((memory / "memory.memsw.failcnt").read_text(encoding="ascii")) > 0
            except (OSError, ValueError):
                return False
        return False

    def pids_limit_hit(self) -> bool:
        pids = self.paths.get("pids")
        if pids is None:
            return False
        try:
            for line in (pids / "pids.events").read_text(encoding="ascii").splitlines():
                key, _, value = line.partition(" ")
                if key == "max" and int(value) > 0:
                    return True
        except (OSError, ValueError):
            return False
        return False

    def pids(self) -> set[int]:
        found: set[int] = set()
        for procs in self.procs_files():
            try:
                found.update(int(x) for x in procs.read_text(encoding="ascii").split())
            except (OSError, ValueError):
                continue
        return found

    def kill_all(self, deadline_s: float = 5.0) -> None:
        """SIGKILL every process of the run, repeating until none is left (forks race the first pass)."""
        for path in dict.fromkeys(self.paths.values()):
            if _write(path / "cgroup.kill", "1"):
                break
        end = time.monotonic() + deadline_s
        while (pids := self.pids()) and time.monotonic() < end:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.02)

    def remove(self) -> None:
        self.kill_all()
        for path in dict.fromkeys(self.paths.values()):
            for _ in range(50):
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)


def create(name: str, *, memory_bytes: int, pids: int, cpus: float) -> RunCgroups:
    """Create the run's cgroups named `name` under the worker's own cgroups and set their limits."""
    if _is_v2():
        return _create_v2(name, memory_bytes=memory_bytes, pids=pids, cpus=cpus)
    groups = RunCgroups(version=1)
    settings = {
        "memory": {
            "memory.limit_in_bytes": str(memory_bytes),
            "memory.memsw.limit_in_bytes": str(memory_bytes),
            "memory.swappiness": "0",
        },
        "pids": {"pids.max": str(pids)},
        "cpu": {
            "cpu.cfs_period_us": str(_CFS_PERIOD_US),
            "cpu.cfs_quota_us": str(int(cpus * _CFS_PERIOD_US)),
        },
    }
    for controller, values in settings.items():
        own = _own_path(controller)
        if own is None:
            continue
        base = CGROUP_ROOT / controller / own.lstrip("/") / "midog-sandbox"
        path = base / name
        try:
            path.mkdir(parents=True, exist_ok=False)
        except OSError:
            continue
        # memory.memsw.* is absent without swap accounting; the plain limit still holds then.
        required = next(iter(values))
        if not _write(path / required, values[required]):
            path.rmdir()
            continue
        for key, value in list(values.items())[1:]:
            _write(path / key, value)
        groups.paths[controller] = path
    return groups


def _create_v2(name: str, *, memory_bytes: int, pids: int, cpus: float) -> RunCgroups:
    groups = RunCgroups(version=2)
    own = _own_path("")
    if own is None:
        return groups
    base = CGROUP_ROOT / own.lstrip("/") / "midog-sandbox"
    path = base / name
    try:
        path.mkdir(parents=True, exist_ok=False)
    except OSError:
        return groups
    # The run's leaf gets controllers only if its parent delegates them (no processes in `base` itself).
    available = set((base / "cgroup.controllers").read_text(encoding="ascii").split())
    wanted = [c for c in ("memory", "pids", "cpu") if c in available]
    _write(base / "cgroup.subtree_control", " ".join(f"+{c}" for c in wanted))
    if _write(path / "memory.max", str(memory_bytes)):
        _write(path / "memory.swap.max", "0")
        groups.paths["memory"] = path
    if _write(path / "pids.max", str(pids)):
        groups.paths["pids"] = path
    if _write(path / "cpu.max", f"{int(cpus * _CFS_PERIOD_US)} {_CFS_PERIOD_US}"):
        groups.paths["cpu"] = path
    if not groups.paths:
        path.rmdir()
    return groups


def from_paths(paths: dict[str, str]) -> RunCgroups:
    """Rebuild a run's cgroups from its saved state (for reaping after a worker crash)."""
    version = 2 if _is_v2() else 1
    return RunCgroups(paths={k: Path(v) for k, v in paths.items()}, version=version)
