"""Which isolation controls the bubblewrap sandbox can apply on this host, and the fail-closed rule.

Controls: `memory` (a memory cgroup with memory+swap limited), `pids` (a pids cgroup), `seccomp` (the
system-call filter of seccomp.py). Participant code runs only when all three are in force. A deployment
may run without some of them only by naming them in MIDOG_SANDBOX_ALLOW_MISSING_CONTROLS (comma-separated,
e.g. `pids`); the rlimit fallbacks (address space, processes per uid) then stand in, the worker prints the
opt-out at start-up and reports it with its capabilities, which the admin API shows.

Imports the stdlib and worker.sandbox only; must not import Celery, SQLAlchemy, FastAPI or torch.
"""

from __future__ import annotations

import uuid

from worker.errors import InfrastructureError
from worker.sandbox import cgroups, seccomp

CONTROLS = ("memory", "pids", "seccomp")
ALLOW_MISSING_VARIABLE = "MIDOG_SANDBOX_ALLOW_MISSING_CONTROLS"
_WHY = {
    "memory": "no usable memory cgroup controller (memory+swap limit)",
    "pids": "no usable pids cgroup controller",
    "seccomp": "no seccomp filter for this architecture",
}


class IsolationError(InfrastructureError):
    """A required isolation control cannot be applied: participant code does not run."""


def allowed_missing(setting: str) -> frozenset[str]:
    """The controls a deployment explicitly runs without: the setting MIDOG_SANDBOX_ALLOW_MISSING_CONTROLS."""
    named = {part.strip().lower() for part in setting.split(",") if part.strip()}
    unknown = named - set(CONTROLS)
    if unknown:
        raise IsolationError(
            f"{ALLOW_MISSING_VARIABLE} names unknown controls {sorted(unknown)}; known: {', '.join(CONTROLS)}"
        )
    return frozenset(named)


def missing_controls(groups: cgroups.RunCgroups, *, has_seccomp: bool) -> list[str]:
    present = set(groups.controllers) | ({"seccomp"} if has_seccomp else set())
    return [control for control in CONTROLS if control not in present]


def require_controls(groups: cgroups.RunCgroups, *, has_seccomp: bool, allowed: frozenset[str]) -> None:
    """Raise IsolationError naming each missing control that the deployment did not allow to miss."""
    refused = [control for control in missing_controls(groups, has_seccomp=has_seccomp) if control not in allowed]
    if refused:
        reasons = "; ".join(_WHY[control] for control in refused)
        raise IsolationError(
            f"sandbox isolation incomplete on this worker host: {reasons}. Participant code was not run. "
            f"Fix the host, or set {ALLOW_MISSING_VARIABLE}={','.join(refused)} to run without it"
        )


def probe() -> dict[str, bool]:
    """Each control: can it be applied here now? Creates and removes a throw-away cgroup."""
    groups = cgroups.create(f"probe-{uuid.uuid4().hex[:8]}", memory_bytes=64 * 1024**2, pids=16, cpus=1.0)
    try:
        missing = set(missing_controls(groups, has_seccomp=seccomp.build_filter() is not None))
    finally:
        groups.remove()
    return {control: control not in missing for control in CONTROLS}
