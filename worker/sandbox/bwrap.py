"""The bubblewrap backend: participant code in fresh namespaces on hosts without a container engine.

Layers, outermost first:
- a per-run cgroup (memory = memory+swap, pids, CPU quota; see cgroups.py), joined by a tiny sh wrapper
  before anything else runs, so every descendant is accounted for and can be killed and reaped;
- prlimit: open files, core size 0, per-file size (the /output quota), and, only where the cgroup
  controller is missing, address space and process count as a coarser fallback;
- setpriv (when the worker is root): the real uid/gid outside become the spec's non-root ids, all
  capabilities and supplementary groups are dropped, no_new_privs is set;
- bwrap --unshare-all (user, pid, net, ipc, uts, cgroup namespaces: no network at all), --die-with-parent,
  --new-session, --cap-drop ALL, --disable-userns (no nested user namespaces), a seccomp filter
  (seccomp.py), a root built from read-only binds of the host's /usr and the spec's mounts, tmpfs /tmp
  and /dev/shm with sizes, /output bound from the size-bounded output area.
Isolation fails closed (isolation.py): without the memory and pids cgroups and the seccomp filter the run
does not start, unless the deployment explicitly allows a control to be missing.
bwrap runs as the unprivileged uid, so it must be able to reach every mount source. A root worker
therefore runs the whole chain inside a mount namespace of the run's own (mountns.py), where each source is
bound read-only into the run's directory (search-only permissions up to it) and the output tmpfs is
mounted: the host's namespace never holds a mount of a run, so a crash at any moment leaves none behind and
the worker's data directories may stay private. A non-root worker needs sources its sandbox uid can reach.

Imports the stdlib and worker.sandbox only; must not import Celery, SQLAlchemy, FastAPI or torch.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from worker.sandbox import cgroups, isolation, mountns, seccomp
from worker.sandbox.output import (
    OutputArea,
    RunDirectory,
    read_state,
    remove_run_directory,
    run_directories,
)
from worker.sandbox.spec import SandboxError, SandboxResult, SandboxSpec
from worker.sandbox.streams import TailReader

# Host paths bound read-only into every sandbox: the system's programs and libraries, and the few /etc
# files the dynamic loader and Python need. Nothing else of the host is visible.
HOST_BINDS = ("/usr", "/etc/ld.so.cache", "/etc/alternatives", "/etc/localtime")
_NVIDIA_DEVICES = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia-modeset")
_JOIN_CGROUPS = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"'


def default_runtime_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/run/midog-sandbox")
    return Path(tempfile.gettempdir()) / f"midog-sandbox-{os.geteuid()}"


def _start_time(pid: int) -> str | None:
    """Field 22 of /proc/<pid>/stat: tells a process apart from a later one that reuses its pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _memory_file(data: bytes) -> int:
    """An anonymous in-memory file holding `data`, positioned at its start (bwrap reads it from there)."""
    fd = os.memfd_create("midog-seccomp", os.MFD_CLOEXEC)
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


class BwrapBackend:
    """Runs argv inside bubblewrap under a SandboxSpec."""

    name = "bwrap"

    def __init__(
        self,
        *,
        runtime_dir: Path | None = None,
        output_tmpfs: bool | None = None,
        allowed_missing: frozenset[str] | None = None,
    ) -> None:
        self.runtime_dir = runtime_dir or default_runtime_dir()
        # None: a size-limited tmpfs for /output when the worker is root; False: a watched plain directory.
        self.output_tmpfs = output_tmpfs
        # Fail closed: every control is required unless the deployment's settings allow one to be missing.
        self.allowed_missing = frozenset() if allowed_missing is None else allowed_missing

    def check(self) -> None:
        """Raise SandboxError unless bwrap and the helpers it needs are installed."""
        needed = ["bwrap", "prlimit"] + (["setpriv", "unshare", "mount"] if os.geteuid() == 0 else [])
        missing = [tool for tool in needed if shutil.which(tool) is None]
        if missing:
            raise SandboxError(f"the bwrap sandbox backend needs {', '.join(missing)} on the worker host")

    def problem(self) -> str | None:
        """Why participant code cannot run here (a tool or an isolation control missing), or None."""
        try:
            self.check()
            report = isolation.probe()
        except (SandboxError, isolation.IsolationError) as exc:
            return str(exc)
        refused = [c for c, ok in report.items() if not ok and c not in self.allowed_missing]
        if refused:
            return (
                f"sandbox isolation incomplete: {', '.join(refused)} cannot be applied on this host "
                f"(or allow it with {isolation.ALLOW_MISSING_VARIABLE})"
            )
        return None

    def run(self, spec: SandboxSpec, argv: Sequence[str], *, output_dir: Path) -> SandboxResult:
        """Run argv; copy what it left in /output to output_dir; never raise for the code's own faults."""
        self.check()
        if not argv:
            raise SandboxError("the bwrap backend needs a command to run")
        run_dir = RunDirectory(self.runtime_dir, self.name, spec.label)
        private = os.geteuid() == 0
        # A root worker mounts (output tmpfs, staged sources) only inside the run's own mount namespace.
        kernel_quota = private and self.output_tmpfs is not False
        area = OutputArea(
            run_dir.path / "output",
            quota_bytes=spec.output_bytes,
            max_files=spec.output_files,
            uid=spec.uid,
            gid=spec.gid,
        )
        groups = cgroups.RunCgroups()
        try:
            groups = cgroups.create(
                f"{spec.label}-{run_dir.run_id}",
                memory_bytes=spec.memory_bytes,
                pids=spec.pids,
                cpus=spec.cpus,
            )
            run_dir.write_state({"cgroups": {k: str(v) for k, v in groups.paths.items()}, "labels": dict(spec.labels)})
            program = seccomp.build_filter()
            isolation.require_controls(groups, has_seccomp=program is not None, allowed=self.allowed_missing)
            if not kernel_quota:
                area.create()
            ready = list(os.pipe())
            filter_fd = _memory_file(program) if program is not None else None
            try:
                stages: list[tuple[str, str]] = []
                command = self._command(spec, argv, area, groups, run_dir, stages, filter_fd, kernel_quota)
                if private:
                    command = self._in_private_namespace(spec, command, area, run_dir, stages, output_dir, kernel_quota)
                return self._execute(spec, command, area, groups, run_dir, output_dir, ready, filter_fd, kernel_quota)
            finally:
                for fd in [*ready, *([] if filter_fd is None else [filter_fd])]:
                    os.close(fd)
        finally:
            groups.remove()
            remove_run_directory(run_dir.path)

    @staticmethod
    def _in_private_namespace(
        spec: SandboxSpec,
        command: list[str],
        area: OutputArea,
        run_dir: RunDirectory,
        stages: list[tuple[str, str]],
        output_dir: Path,
        kernel_quota: bool,
    ) -> list[str]:
        """`command` wrapped in worker.sandbox.mountns: staging and the output tmpfs in a namespace of the run."""
        output = None
        if kernel_quota:
            output = {
                "path": str(area.path),
                "quota_bytes": spec.output_bytes,
                "max_files": spec.output_files,
                "uid": spec.uid,
                "gid": spec.gid,
            }
        plan = run_dir.path / "plan.json"
        mountns.write_plan(
            plan,
            output=output,
            stages=stages,
            argv=command,
            collect=output_dir,
            report=run_dir.path / "report.json",
        )
        return mountns.command(plan)

    def _command(
        self,
        spec: SandboxSpec,
        argv: Sequence[str],
        area: OutputArea,
        groups: cgroups.RunCgroups,
        run_dir: RunDirectory,
        stages: list[tuple[str, str]],
        filter_fd: int | None,
        kernel_quota: bool,
    ) -> list[str]:
        def reachable(source: Path, index: int) -> str:
            if os.geteuid() != 0:
                return str(source)
            # Bound there by worker.sandbox.mountns, inside the run's own mount namespace only.
            stage = run_dir.path / f"mount-{index}"
            stages.append((str(source), str(stage)))
            return str(stage)

        command: list[str] = []
        if groups.paths:
            command += ["/bin/sh", "-c", _JOIN_CGROUPS, "sh", *map(str, groups.procs_files()), "--"]
        limits = [f"--nofile={spec.nofile}:{spec.nofile}", "--core=0:0"]
        if not kernel_quota:
            # One byte over the quota, so that a file stopped by the limit still shows the quota was passed.
            limits.append(f"--fsize={spec.output_bytes + 1}:{spec.output_bytes + 1}")
        if "memory" not in groups.controllers and spec.gpu is None:
            limits.append(f"--as={spec.memory_bytes}:{spec.memory_bytes}")
        if "pids" not in groups.controllers:
            limits.append(f"--nproc={spec.pids}:{spec.pids}")
        command += ["prlimit", *limits, "--"]
        if os.geteuid() == 0:
            command += [
                "setpriv",
                f"--reuid={spec.uid}",
                f"--regid={spec.gid}",
                "--clear-groups",
                "--inh-caps=-all",
                "--bounding-set=-all",
                "--no-new-privs",
                "--",
            ]
        # --disable-userns: no nested user namespaces, the usual door to kernel attack surface.
        command += ["bwrap", "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent"]
        command += ["--new-session", "--cap-drop", "ALL"]
        if filter_fd is not None:
            command += ["--seccomp", str(filter_fd)]
        command += ["--uid", str(spec.uid), "--gid", str(spec.gid), "--hostname", "sandbox"]
        for name in ("bin", "sbin", "lib", "lib64", "lib32"):
            host = Path("/") / name
            if host.is_symlink():
                command += ["--symlink", os.readlink(host), f"/{name}"]
            elif host.is_dir():
                command += ["--ro-bind", str(host), f"/{name}"]
        for path in HOST_BINDS:
            if os.path.exists(path):
                command += ["--ro-bind", path, path]
        command += ["--proc", "/proc", "--dev", "/dev"]
        command += ["--size", str(spec.tmp_bytes), "--perms", "1777", "--tmpfs", "/tmp"]
        command += ["--size", str(spec.shm_bytes), "--perms", "1777", "--tmpfs", "/dev/shm"]
        if spec.gpu is not None:
            for device in (f"/dev/nvidia{spec.gpu}", *_NVIDIA_DEVICES):
                if os.path.exists(device):
                    command += ["--dev-bind", device, device]
        for index, mount in enumerate(spec.mounts):
            if not mount.source.exists():
                raise SandboxError(f"mount source {mount.source} does not exist")
            command += ["--ro-bind", reachable(mount.source, index), mount.target]
        command += ["--bind", str(area.path), "/output"]
        command += ["--remount-ro", "/", "--chdir", spec.workdir or "/tmp", "--clearenv"]
        for key, value in spec.environment().items():
            command += ["--setenv", key, value]
        # The shim reports on its stdin (the write end of a pipe) that the sandbox is set up, replaces stdin
        # with /dev/null, then becomes the program; a run that ends without that byte failed in bwrap
        # itself, an infrastructure fault and not the participant's.
        shim = 'printf x >&0; exec 0</dev/null; exec "$@"'
        return [*command, "--", "/bin/sh", "-c", shim, "sandbox", *argv]

    def _execute(
        self,
        spec: SandboxSpec,
        command: list[str],
        area: OutputArea,
        groups: cgroups.RunCgroups,
        run_dir: RunDirectory,
        output_dir: Path,
        ready: list[int],
        filter_fd: int | None,
        kernel_quota: bool,
    ) -> SandboxResult:
        """`ready` holds the read and write ends of the set-up pipe; an end closed here leaves the list.

        With `kernel_quota` the output was copied to output_dir inside the run's namespace; otherwise the
        plain output directory is watched here and copied afterwards.
        """
        private = os.geteuid() == 0
        ready_read, ready_write = ready
        started = time.monotonic()
        process = subprocess.Popen(
            command,
            stdin=ready_write,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            pass_fds=() if filter_fd is None else (filter_fd,),
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        )
        os.close(ready_write)
        ready.remove(ready_write)
        run_dir.write_state(
            {
                "pid": process.pid,
                "start_time": _start_time(process.pid),
                "cgroups": {k: str(v) for k, v in groups.paths.items()},
                "labels": dict(spec.labels),
            }
        )
        stdout = TailReader(process.stdout, spec.log_tail_bytes)
        stderr = TailReader(process.stderr, spec.log_tail_bytes)

        def kill() -> None:
            # Only while the leader is unreaped: its pid, hence its process group id, cannot be reused yet.
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)
            groups.kill_all()

        if not kernel_quota:
            area.start_watchdog(kill)
        timed_out = False
        try:
            process.wait(timeout=spec.wall_seconds)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            # Also on exceptions (a Celery soft time limit, a shutdown): nothing of the run outlives it.
            if timed_out or process.returncode is None:
                kill()
            process.wait()
            groups.kill_all()
            area.stop_watchdog()
        wall = time.monotonic() - started
        os.set_blocking(ready_read, False)
        try:
            set_up = os.read(ready_read, 1) == b"x"
        except BlockingIOError:
            set_up = False
        code = process.returncode
        output_exceeded = False
        if private:
            report = mountns.read_report(run_dir.path / "report.json") or {}
            if "error" in report:
                raise SandboxError(f"the sandbox's mount namespace could not be set up: {report['error']}")
            # A run this worker killed (time limit, output watchdog) ends without a report.
            if not (timed_out or area.watchdog_fired) and "exit_code" not in report:
                raise SandboxError(f"the sandbox's mount namespace ended early: {stderr.text()[-500:].strip()}")
            if isinstance(report.get("exit_code"), int):
                code = report["exit_code"]
            output_exceeded = bool(report.get("output_exceeded", False))
        if not set_up and not timed_out:
            raise SandboxError(f"bwrap could not set up the sandbox: {stderr.text()[-500:].strip()}")
        exit_code = 128 - code if code < 0 else code
        memory_exceeded = groups.memory_oom_killed() or ("memory" not in groups.controllers and code == 137)
        if not kernel_quota:
            output_exceeded = area.exceeded()
            area.copy_to(output_dir)
        return SandboxResult(
            exit_code=exit_code,
            timed_out=timed_out,
            memory_exceeded=memory_exceeded and not timed_out,
            output_exceeded=output_exceeded,
            wall_seconds=wall,
            output_dir=output_dir,
            stdout_tail=stdout.text(),
            stderr_tail=stderr.text(),
            pids_exceeded=groups.pids_limit_hit(),
        )

    def leftover_labels(self) -> list[str]:
        """Labels with runs on record: after a worker restart, the runs its predecessor left behind."""
        base = self.runtime_dir / self.name
        return sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []

    def reap(self, label: str) -> int:
        """Kill and remove everything left by runs labelled `label` (also after a worker crash)."""
        reaped = 0
        for run_dir in run_directories(self.runtime_dir, self.name, label):
            state = read_state(run_dir)
            pid = state.get("pid")
            if isinstance(pid, int) and state.get("start_time") == _start_time(pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
            paths = state.get("cgroups")
            if isinstance(paths, dict):
                cgroups.from_paths({str(k): str(v) for k, v in paths.items()}).remove()
            remove_run_directory(run_dir)
            reaped += 1
        return reaped
