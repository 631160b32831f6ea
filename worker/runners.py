"""The runner interface between the pipeline and whatever executes participant code, plus its test double.

A runner turns a model or container submission into a predictions file for a given list of cases of a
hidden test set. Real runners (worker/sandbox, worker/containers) execute participant code inside the
sandbox; `ReplayRunner` is the deterministic test double: it executes nothing and replays detections stored
in the submitted file. Runners are chosen per submission kind by the setting `MIDOG_RUNNER_<KIND>=module:attribute`.

`run_bounded` is the wall-clock guard every subprocess-based runner uses: it kills the whole process group
at the sandbox timeout, so nothing outlives the job.

Imports the stdlib, worker.errors and worker.evaluation only; must not import Celery, SQLAlchemy or torch.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from worker.errors import SubmissionError

TIME_LIMIT_MESSAGE = "time limit exceeded"
MEMORY_LIMIT_MESSAGE = "memory limit exceeded"


@dataclass(frozen=True)
class RunRequest:
    """One run of participant code over some cases of a test set."""

    evaluation_id: int
    kind: str
    artifact: Path
    # Only images/ and manifest.json of this directory may ever reach participant code.
    test_set_dir: Path
    cases: tuple[str, ...]
    output_dir: Path
    timeout_s: float
    # Hidden phase: failures are reported without anything the participant's code chose (exit status, output).
    hidden: bool = True
    # Container input layout of the phase ("2022" | "2021"); None: the runner's setting.
    input_layout: str | None = None
    # Memory limit of the phase; None: the runner's setting.
    memory_bytes: int | None = None
    # detection (points per image) or classification (one class and confidence per patch of each stack)
    task: str = "detection"
    # Container submissions: weights uploaded apart from the image (a .tar.gz), extracted read-only to
    # /opt/ml/model inside the container; None: the image carries its own.
    model_archive: Path | None = None
    # Container run mode: "exec" (the image's command once per case) or "invoke" (the image serves
    # GET /health and POST /invoke on 127.0.0.1:4743, started once per run, one call per case).
    run_mode: str = "exec"
    # The phase lets participants read their run's logs: failure lines may then quote the first cause.
    show_logs: bool = False


# Runners that capture the participant program's output write the last LOG_TAIL_LINES lines of each case's
# stdout and stderr, merged in order, to `output_dir / LOGS_DIR / f"{case}.log"`; the pipeline keeps them.
LOGS_DIR = "logs"
LOG_TAIL_LINES = 500


@runtime_checkable
class Runner(Protocol):
    """Executes a submission; returns a predictions path (`read_predictions` format) under output_dir.

    Raises SubmissionError for faults of the submission (shown to the participant, one line) and
    RetryableError for infrastructure faults. Must return or raise within `request.timeout_s`. A runner may
    set a `run_info` mapping of JSON values (backend, device, image digest) after a run: it goes into the
    result's provenance.
    """

    def run(self, request: RunRequest) -> Path: ...


class RunnerNotConfiguredError(LookupError):
    """No runner is configured for a submission kind (an organiser's configuration error)."""


# Used when the settings name no runner for a kind (MIDOG_RUNNER_<KIND>); a kind without an entry needs one.
DEFAULT_RUNNERS = {
    "container": "worker.containers.runner:ContainerRunner",
    "model": "worker.model_runner:ModelArchiveRunner",
}


def load_runner(kind: str, settings: Any = None) -> Runner:
    """The runner for `kind`: the settings' `runner_<kind>` (`package.module:Class`), else the default.

    `settings` is the process's app.settings.Settings (read by attribute; None: the process's). A runner
    class with a `from_settings(settings)` constructor is built with it, any other without arguments.
    """
    if settings is None:
        from app.settings import get_settings

        settings = get_settings()
    variable = f"MIDOG_RUNNER_{kind.upper()}"
    spec = getattr(settings, f"runner_{kind}", "") or DEFAULT_RUNNERS.get(kind, "")
    if not spec:
        raise RunnerNotConfiguredError(f"no runner configured for {kind} submissions (set {variable})")
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise RunnerNotConfiguredError(f"{variable}={spec!r} is not of the form package.module:Class")
    factory = getattr(importlib.import_module(module_name), attribute)
    build = getattr(factory, "from_settings", None)
    runner = build(settings) if callable(build) else factory()
    if not isinstance(runner, Runner):
        raise RunnerNotConfiguredError(f"{variable}={spec!r} does not provide run(request)")
    return runner


def runner_problem(kind: str, settings: Any = None) -> str | None:
    """Why this worker cannot run `kind` submissions (no runner, backend or isolation control), or None.

    Runners may offer `problem() -> str | None`; one that does not is taken to be ready.
    """
    try:
        runner = load_runner(kind, settings)
    except Exception as exc:  # an unusable configuration is exactly what this reports
        return f"{exc.__class__.__name__}: {exc}"
    check = getattr(runner, "problem", None)
    return check() if callable(check) else None


class ReplayRunner:
    """TEST DOUBLE, executes nothing: replays the detections stored in the submitted file.

    The artifact is a predictions JSON (`{"001.tiff": <Multiple points>, ...}`); the runner copies the
    entries of the requested cases to `output_dir/predictions.json`, so sharded and single runs see exactly
    what a deterministic model would have produced. Cases the file lacks are written as empty detections.
    """

    def run(self, request: RunRequest) -> Path:
        try:
            stored = json.loads(request.artifact.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SubmissionError(f"replay file {request.artifact.name} is not readable JSON") from exc
        if not isinstance(stored, dict):
            raise SubmissionError(f"replay file {request.artifact.name} must hold an object keyed by image")
        empty: Any = (
            []
            if request.task == "classification"
            else {"type": "Multiple points", "points": [], "version": {"major": 1, "minor": 0}}
        )
        replayed = {case: stored.get(case, empty) for case in request.cases}
        request.output_dir.mkdir(parents=True, exist_ok=True)
        output = request.output_dir / "predictions.json"
        output.write_text(json.dumps(replayed), encoding="utf-8")
        return output


def run_bounded(
    argv: Sequence[str],
    *,
    timeout_s: float,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run argv in its own process group; at `timeout_s` kill the whole group and raise SubmissionError.

    Output is discarded here (participants never see logs in hidden phases); exit code 137 (SIGKILL, the
    kernel's OOM killer or a memory cgroup) is reported as a memory limit.
    """
    process = subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=None if env is None else dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(process)
        raise SubmissionError(TIME_LIMIT_MESSAGE) from None
    except BaseException:
        # Celery's soft time limit or a worker shutdown arrives as an exception here: leave nothing behind.
        _kill_group(process)
        raise
    finally:
        # Children that outlived a finished leader are killed too: the group is the job.
        _kill_group(process)
    if process.returncode in (137, -signal.SIGKILL):
        raise SubmissionError(MEMORY_LIMIT_MESSAGE)
    return subprocess.CompletedProcess(list(argv), process.returncode)


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
