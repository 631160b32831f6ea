"""Grand-challenge's `invoke` mode: the container starts once per run and serves one request per case.

The image's own command starts a web server on 127.0.0.1:4743 inside the container (which still has no
network; the worker reaches its loopback through the container's network namespace). Rules:
- `GET /health` must answer 200 within `health_seconds` of the start; a container that exits first or
  never answers fails the run with one line (`NEVER_HEALTHY`);
- per case, the inputs and /input/inputs.json are placed exactly as in `exec` mode, then `POST /invoke`
  must answer 201 within the case's time (the per-case limit, cut to what is left of the run's) once
  /output holds the case's file, which is checked as in `exec` mode; /input and /output are emptied after
  each case;
- the container keeps its model loaded across cases: it is one process, with the run's memory, pids,
  output and wall-clock limits;
- each case's log is the lines the container printed during its request (the first case's include the
  start-up), kept like `exec` mode's.

Imports the stdlib, worker.containers, worker.evaluation and worker.sandbox only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path

from worker.containers.causes import first_cause
from worker.containers.contract import (
    CaseOutcome,
    Layout,
    Task,
    check_case_output,
    input_path,
    write_inputs_json,
)
from worker.sandbox import MEMORY_LIMIT, OUTPUT_LIMIT, TIME_LIMIT, SandboxSpec
from worker.sandbox.served import ServedContainer

PORT = 4743
NEVER_HEALTHY = (
    "the container's server did not answer GET /health with 200 on 127.0.0.1:4743 in time (invoke mode): "
    "start it from the image's command and answer /health once the model is loaded"
)
_INVOKE_STATUS = "POST /invoke did not answer 201 (invoke mode)"


def _health(served: ServedContainer, health_seconds: float) -> bool:
    until = time.monotonic() + min(health_seconds, max(served.remaining(), 0.0))
    while time.monotonic() < until:
        if not served.running():
            return False
        try:
            if served.request("GET", "/health", port=PORT, timeout=min(10.0, until - time.monotonic() + 0.1)) == 200:
                return True
        except (OSError, TimeoutError):
            pass
        time.sleep(0.2)
    return False


def _limit_line(served: ServedContainer, timed_out: bool) -> str | None:
    """The limit the container hit, when it died or was killed (the runner's verdicts, safe to show)."""
    if served.area.exceeded() or served.area.watchdog_fired:
        return OUTPUT_LIMIT
    if timed_out or (served.killed.is_set() and served.remaining() <= 0):
        return TIME_LIMIT
    _, oom = served.exit_state()
    if oom and not served.killed.is_set():
        return MEMORY_LIMIT
    return None


def run_invoke(
    backend: object,
    spec: SandboxSpec,
    *,
    images: Mapping[str, Path],
    work_dir: Path,
    layout: Layout,
    task: Task,
    patches: Mapping[str, int],
    hidden: bool,
    case_seconds: float,
    health_seconds: float,
    on_log: Callable[[str, list[str]], None],
) -> dict[str, Path]:
    """Run every case through one served container; case -> its checked output file, or a failed outcome.

    Returns on the first failure with that case's CaseOutcome in `failure` (see InvokeError).
    """
    produced: dict[str, Path] = {}
    with ServedContainer(backend, spec) as served:
        first = 0  # the start-up's lines, from the very first
        if not _health(served, health_seconds):
            served.log.settle()
            lines = served.log.since(first)
            on_log(next(iter(images), "startup"), lines)
            limit = _limit_line(served, served.remaining() <= 0)
            cause = first_cause("\n".join(lines))
            line = limit or (cause.hidden if cause and hidden else None) or NEVER_HEALTHY
            detail = f"{limit or NEVER_HEALTHY}{': ' + cause.open if cause else ''}"
            raise InvokeError(CaseOutcome("startup", None, line if hidden else detail, detail, None))
        # Each case's log is every line from its request's start to the next one's (what a server prints
        # just after replying, such as its access log, still belongs to that case): no waiting per case.
        mark = first
        previous: str | None = None
        for case, image in images.items():
            now = served.log.mark() if previous is not None else first
            if previous is not None:
                on_log(previous, served.log.since(mark, now))
            mark, previous = now, case
            served.place(image, input_path(case, layout, task).removeprefix("/input/"))
            write_inputs_json(case, layout, task, served.input_dir / "inputs.json")
            budget = min(case_seconds, served.remaining())
            timed_out = budget <= 0
            status: int | None = None
            if not timed_out:
                try:
                    status = served.request("POST", "/invoke", port=PORT, timeout=budget)
                except TimeoutError:
                    timed_out = True
                except OSError:
                    status = None
            if status != 201:
                served.log.settle()
                lines = served.log.since(mark)
                on_log(case, lines)
                limit = _limit_line(served, timed_out)
                cause = first_cause("\n".join(lines))
                public = limit or (f"{_INVOKE_STATUS}: status {status}" if status else _INVOKE_STATUS)
                hidden_line = limit or (cause.hidden if cause else _INVOKE_STATUS)
                detail = f"case {case}: {public}{': ' + cause.open if cause and not limit else ''}"
                raise InvokeError(CaseOutcome(case, None, hidden_line if hidden else detail, detail, None))
            collected = work_dir / case
            served.area.copy_to(collected)
            served.clear()
            outcome = check_case_output(case, collected, None, hidden=hidden, task=task, patches=patches.get(case))
            if outcome.reason is not None or outcome.predictions is None:
                served.log.settle()
                on_log(case, served.log.since(mark))
                raise InvokeError(outcome)
            produced[case] = outcome.predictions
        if previous is not None:
            served.log.settle()
            on_log(previous, served.log.since(mark))
    return produced


class InvokeError(Exception):
    """A case (or the start-up) failed in invoke mode; `outcome` carries both lines."""

    def __init__(self, outcome: CaseOutcome) -> None:
        super().__init__(outcome.reason)
        self.outcome = outcome
