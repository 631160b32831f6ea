"""Runners used by the worker tests, loaded in real worker subprocesses through MIDOG_RUNNER_MODEL.

Each one first appends a line `<evaluation id> <pid>` to the file named by MIDOG_TEST_RUNNER_LOG, so a
test can count how often participant code really started, then behaves as its name says. The detections
always come from `ReplayRunner` (the submitted file), so results are deterministic.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from worker.runners import ReplayRunner, RunRequest, run_bounded
from worker.sandbox.isolation import IsolationError


def _log(request: RunRequest) -> None:
    log = os.environ.get("MIDOG_TEST_RUNNER_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as handle:
            handle.write(f"{request.evaluation_id} {os.getpid()} {','.join(request.cases)}\n")
            handle.flush()
            os.fsync(handle.fileno())


def _behaviour(request: RunRequest) -> str:
    """The artifact's file name says what to do: `<behaviour>--anything.json`."""
    return request.artifact.name.split("--", 1)[0]


class ScriptedRunner:
    """replay (default), slow (sleeps MIDOG_TEST_SLOW_S first), forward (sleeps MIDOG_TEST_CASE_S per case: a
    model whose forward pass dominates, for bench/distributed.py), crash (SIGKILLs its own process),
    hang (a child process that never ends), sandboxed (a bubblewrap sandbox under MIDOG_TEST_SANDBOX_RUNTIME
    that sleeps), stall (the worker process itself never returns), unisolated (the sandbox refuses to start:
    a control is missing on this host)."""

    def run(self, request: RunRequest) -> Path:
        _log(request)
        behaviour = _behaviour(request)
        if behaviour == "slow":
            time.sleep(float(os.environ.get("MIDOG_TEST_SLOW_S", "2")))
        elif behaviour == "forward":
            for _case in request.cases:
                time.sleep(float(os.environ.get("MIDOG_TEST_CASE_S", "0.25")))
        elif behaviour == "crash":
            os.kill(os.getpid(), signal.SIGKILL)
        elif behaviour == "hang":
            # Participant code that never ends, in a child process (as the sandbox runs it).
            marker = f"midog-test-hang-{request.evaluation_id}"
            run_bounded(
                [sys.executable, "-c", "import time\nwhile True: time.sleep(1)", marker],
                timeout_s=request.timeout_s,
            )
        elif behaviour == "sandboxed":
            # Participant code in a real bubblewrap sandbox, sleeping until something stops it; the run is
            # reaped on the way out whatever ends it, as ModelArchiveRunner does.
            from worker.sandbox import BwrapBackend, SandboxSpec

            backend = BwrapBackend(runtime_dir=Path(os.environ["MIDOG_TEST_SANDBOX_RUNTIME"]))
            label = f"model-{request.evaluation_id}-test"
            try:
                spec = SandboxSpec(label=label, wall_seconds=request.timeout_s)
                backend.run(spec, ["/bin/sh", "-c", "sleep 600"], output_dir=request.output_dir)
            finally:
                backend.reap(label)
        elif behaviour == "stall":
            while True:
                time.sleep(0.1)
        elif behaviour == "unisolated":
            raise IsolationError("sandbox isolation incomplete on this worker host: no usable pids cgroup controller")
        return ReplayRunner().run(request)
