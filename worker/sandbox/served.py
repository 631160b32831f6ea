"""A long-running sandboxed container serving HTTP on its own loopback (grand-challenge's `invoke` mode).

`ServedContainer(backend, spec)` starts the image's own command once, under exactly the flags of a
one-shot run (PodmanBackend.run_arguments: no network, user namespace, no capabilities, seccomp, limits),
with two host directories bound: `input_dir` read-only at /input and the watched output area read-write
at /output. The caller places each request's inputs in `input_dir`, calls `request()` (HTTP over the
container's own network namespace, worker.sandbox.netns), then collects `output_dir` and clears both.
Its stdout and stderr go through one pipe into a LineLog, so each request's log lines can be cut out.
The output quota is watched as for a one-shot run; `close()` kills and removes the container and its run
directory whatever state it is in. The container's wall clock is the spec's `wall_seconds` (the run's).

Imports the stdlib and worker.sandbox only.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from worker.sandbox import netns
from worker.sandbox.output import OutputArea, RunDirectory, remove_run_directory
from worker.sandbox.spec import SandboxError, SandboxSpec
from worker.sandbox.streams import LineLog

_POLL_S = 0.2


class ServedContainer:
    """See the module docstring. Use as a context manager; `start()` runs on enter."""

    def __init__(self, backend: Any, spec: SandboxSpec, *, max_log_lines: int = 5000) -> None:
        from worker.sandbox.podman import host_ids

        self.backend = backend
        self.spec = spec
        self.run_dir = RunDirectory(backend.runtime_dir, backend.name, spec.label)
        self.name = f"midog-{spec.label}-{self.run_dir.run_id}"
        host_uid, host_gid = host_ids(spec)
        self.area = OutputArea(
            self.run_dir.path / "output",
            quota_bytes=spec.output_bytes,
            max_files=spec.output_files,
            uid=host_uid,
            gid=host_gid,
        )
        self.input_dir = self.run_dir.path / "input"
        self.output_dir = self.area.path
        self.process: subprocess.Popen[bytes] | None = None
        self.log = LineLog(None, max_log_lines)
        self.max_log_lines = max_log_lines
        self.pid: int | None = None
        self.killed = threading.Event()
        self._deadline = time.monotonic() + spec.wall_seconds
        self._timer: threading.Timer | None = None

    def __enter__(self) -> ServedContainer:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        self.backend.check()
        self.area.create()
        self.input_dir.mkdir(mode=0o755)
        self.input_dir.chmod(0o755)
        arguments = self.backend.run_arguments(
            self.spec, self.name, self.area.path, file_size_limit=self.spec.output_bytes + 1
        )
        image = arguments.pop()
        arguments += ["-v", f"{self.backend.host_path(self.input_dir)}:/input:{self.backend._volume_options('ro')}"]
        command = [self.backend.executable, *arguments, image]
        self.process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        self.log = LineLog(self.process.stdout, self.max_log_lines)
        self.area.start_watchdog(self.kill)
        self._timer = threading.Timer(self.spec.wall_seconds, self.kill)
        self._timer.daemon = True
        self._timer.start()
        while self.pid is None:
            if self.process.poll() is not None:
                return  # exited (or never started): `running()` says so, the caller reports it
            state = self.backend._engine("inspect", "--format", "{{.State.Pid}}", self.name)
            if state.returncode == 0 and state.stdout.strip().isdigit() and int(state.stdout) > 0:
                self.pid = int(state.stdout)
                break
            if time.monotonic() > self._deadline:
                raise SandboxError(f"{self.backend.executable} did not start the container {self.name}")
            time.sleep(_POLL_S)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None and self.pid is not None

    def remaining(self) -> float:
        return self._deadline - time.monotonic()

    def request(self, method: str, path: str, *, port: int, timeout: float) -> int:
        if self.pid is None:
            raise ConnectionRefusedError("the container is not running")
        return netns.request(self.pid, method, path, port=port, timeout=timeout)

    def kill(self) -> None:
        self.killed.set()
        self.backend._engine("kill", "--signal", "KILL", self.name)

    def exit_state(self) -> tuple[int | None, bool]:
        """(exit code, OOM-killed) once the container has stopped; (None, False) while it runs."""
        state = self.backend._engine("inspect", "--format", "{{.State.ExitCode}} {{.State.OOMKilled}}", self.name)
        fields = state.stdout.split()
        if self.running() or state.returncode != 0 or len(fields) != 2:
            return None, False
        return int(fields[0]), fields[1] == "true" or int(fields[0]) == 137

    def clear(self) -> None:
        """Empty /input and /output between requests (both are the worker's own directories)."""
        for directory in (self.input_dir, self.output_dir):
            for entry in directory.iterdir():
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()

    def place(self, source: Path, relative: str) -> None:
        """Put `source` at /input/`relative` (hard link when on one file system, else a copy)."""
        target = self.input_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        for parent in target.relative_to(self.input_dir).parents:
            (self.input_dir / parent).chmod(0o755)
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)
            target.chmod(0o644)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.process is not None and self.process.poll() is None:
            self.kill()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.area.stop_watchdog()
        self.log.wait()
        self.backend._remove(self.name)
        self.area.destroy()
        remove_run_directory(self.run_dir.path)
