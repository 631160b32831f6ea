"""The root side of a bubblewrap run, inside a mount namespace that belongs to that run alone.

A root worker starts this module through `unshare --mount --propagation private` (see `command`), so every
mount made here exists only in the run's own namespace: the host never sees it, and it vanishes with the
last process of the run, whatever ends it (a SIGKILL of the worker included). Nothing is ever mounted in
the host's namespace, so no later deletion of a run directory can follow a mount into host data.

Steps, as root, in order:
1. refuse to go on unless this process is in a mount namespace other than the worker's, with no mount
   propagating to a peer (a shared mount would carry new mounts back to the host);
2. mount the size- and inode-limited tmpfs of /output on the run's output directory (kernel-enforced quota),
   unless the worker watches a plain output directory itself;
3. bind each mount source read-only at its staging path in the run directory, where the sandbox's
   unprivileged uid can reach it (so the worker's data directories may stay private);
4. run the sandbox command (cgroup join, prlimit, setpriv, bwrap) as a child, in this process group, and
   wait for it; the worker enforces the wall clock by killing this whole group;
5. copy the tmpfs output (regular files and directories, at most the quota; links never followed) to the
   run's destination, then write the report: the command's exit status and whether the quota was hit.
A run without a report did not finish. This process dies with the worker (PR_SET_PDEATHSIG) and bwrap
dies with this process (--die-with-parent).

Imports the stdlib, worker.process_tree and worker.sandbox.output only; must not import Celery, SQLAlchemy,
FastAPI or torch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from worker.process_tree import die_with_parent
from worker.sandbox.output import OutputArea

# Run from the worker with -I (no environment, no user site): the package's parent is put on sys.path.
_ENTRY = "import sys; sys.path.insert(0, sys.argv[1]); from worker.sandbox.mountns import main; main(sys.argv[2])"


def namespace_id() -> str:
    """This process's mount namespace, e.g. `mnt:[4026531841]`."""
    return os.readlink("/proc/self/ns/mnt")


def command(plan_path: Path) -> list[str]:
    """argv that runs this module on `plan_path` in a new, private mount namespace."""
    package_parent = Path(__file__).resolve().parents[2]
    return [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "--",
        sys.executable,
        "-I",
        "-c",
        _ENTRY,
        str(package_parent),
        str(plan_path),
    ]


def write_plan(
    path: Path,
    *,
    output: dict[str, Any] | None,
    stages: list[tuple[str, str]],
    argv: list[str],
    collect: Path,
    report: Path,
) -> None:
    """The run's plan, readable by root only (it names the worker's data paths)."""
    plan = {
        "parent_pid": os.getpid(),
        "host_namespace": namespace_id(),
        "output": output,
        "stages": stages,
        "command": argv,
        "collect": str(collect),
        "report": str(report),
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(plan, handle)


def read_report(path: Path) -> dict[str, Any] | None:
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return loaded if isinstance(loaded, dict) else None


def _shared_mounts() -> list[str]:
    """Mount points of this namespace that still propagate to a peer group ("shared:N")."""
    shared = []
    for line in Path("/proc/self/mountinfo").read_text(encoding="utf-8").splitlines():
        fields = line.split()
        optional = fields[6 : fields.index("-")]
        if any(tag.startswith("shared:") for tag in optional):
            shared.append(fields[4])
    return shared


def _mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, check=False)
    if done.returncode != 0:
        raise OSError(f"mount {' '.join(args)}: {done.stderr.decode(errors='replace').strip()}")


def _stage(source: str, stage: str) -> None:
    target = Path(stage)
    if Path(source).is_dir():
        target.mkdir()
    else:
        target.touch()
    # Read-only already here: the staged view can never be written, even by this process.
    _mount("--bind", "-o", "ro", source, stage)


def _write_report(path: Path, report: dict[str, Any]) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(report), encoding="utf-8")
    temporary.replace(path)


def main(plan_path: str) -> None:
    plan = json.loads(Path(plan_path).read_text(encoding="utf-8"))
    # The worker may have died before the signal was armed: then nobody waits for this run.
    die_with_parent(int(plan["parent_pid"]))
    report_path = Path(plan["report"])
    area: OutputArea | None = None
    try:
        if namespace_id() == plan["host_namespace"]:
            raise OSError("not in a mount namespace of its own; refusing to mount anything")
        shared = _shared_mounts()
        if shared:
            raise OSError(f"mounts still propagate to the host ({', '.join(shared[:3])}); refusing to mount")
        if plan["output"] is not None:
            spec = plan["output"]
            area = OutputArea(
                Path(spec["path"]),
                quota_bytes=int(spec["quota_bytes"]),
                max_files=int(spec["max_files"]),
                uid=int(spec["uid"]),
                gid=int(spec["gid"]),
                use_tmpfs=True,
            )
            area.create()
            if not area.mounted:
                raise OSError("the size-limited tmpfs for /output could not be mounted")
        for source, stage in plan["stages"]:
            _stage(source, stage)
    except OSError as exc:
        _write_report(report_path, {"error": str(exc)})
        raise SystemExit(1) from None
    # stdin (the set-up pipe), stdout, stderr and the seccomp descriptor are the worker's: inherited as they are.
    process = subprocess.Popen(plan["command"], close_fds=False)
    report: dict[str, Any] = {"exit_code": process.wait()}
    if area is not None:
        report["output_exceeded"] = area.exceeded()
        area.copy_to(Path(plan["collect"]))
    _write_report(report_path, report)
