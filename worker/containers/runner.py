"""The pipeline's Runner for OCI container submissions (worker.runners.Runner protocol).

`ContainerRunner.run(request)` validates the uploaded archive again (it may have sat in storage), loads it,
runs it once per requested case under the grand-challenge contract (worker.containers.contract) in the
podman (or docker) sandbox, and writes `predictions.json` for the scoring core: case name -> the validated
"Multiple points" object (detection), or stack name -> the validated Track 2 list, one item per patch
(`request.task == "classification"`: the patch counts come from the test set's manifest; the input layout
does not apply). Both are what the pipeline's readers take (`predict`, `predict_stacks`).
Any failed case fails the run with that case's one line (SubmissionError); containers and the image are
removed whatever happens. The phase's memory limit, when the request carries one, replaces the worker's.
Settings (`ContainerSettings.from_settings`, from the process's app.settings.Settings):
MIDOG_SANDBOX_BACKEND (podman | docker), MIDOG_SANDBOX_RUNTIME_DIR, MIDOG_CONTAINER_LAYOUT (2022 | 2021),
MIDOG_CONTAINER_CASE_SECONDS, MIDOG_CONTAINER_MEMORY_BYTES, MIDOG_CONTAINER_CPUS, MIDOG_CONTAINER_GPU
(auto | none | <index>), MIDOG_SANDBOX_HOST_PATHS (`/worker/path=/host/path,...` when the worker runs in
a container and drives the host's engine through its socket), MIDOG_SANDBOX_RUNNER_SOCKET.

Imports the stdlib, worker.errors, worker.evaluation, worker.sandbox and worker.containers only.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from worker.containers.archive import ImageLimits, validate_image_archive
from worker.containers.contract import Layout, Task, run_case
from worker.errors import SubmissionError
from worker.evaluation.io import read_json
from worker.safe_delete import scratch_directory
from worker.sandbox import (
    TIME_LIMIT,
    SandboxError,
    SandboxSpec,
    get_backend,
    gpu_present,
    parse_host_paths,
)

DEFAULT_UID = 10001
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ContainerSettings:
    backend: str = "podman"
    runtime_dir: Path | None = None
    layout: Layout = "2022"
    case_seconds: float = 600.0
    memory_bytes: int = 16 * 1024**3
    cpus: float = 4.0
    pids: int = 256
    shm_bytes: int = 2 * 1024**3
    tmp_bytes: int = 4 * 1024**3
    output_bytes: int = 64 * 1024**2
    gpu: str = "auto"
    host_paths: Mapping[str, str] = field(default_factory=dict)

    # Through the sandbox runner service listening here (an unprivileged worker); None: this host's engine.
    runner_socket: Path | None = None
    # The upload limit of image archives (MIDOG_MAX_CONTAINER_BYTES): runs apply the upload check's limits.
    max_image_bytes: int = ImageLimits.max_archive_bytes

    @classmethod
    def from_settings(cls, settings: Any) -> ContainerSettings:
        """From an app.settings.Settings (read by attribute: this module does not import the service)."""
        return cls(
            backend=settings.sandbox_backend or "podman",
            runtime_dir=settings.sandbox_runtime_dir,
            layout=cast(Layout, settings.container_layout),
            case_seconds=settings.container_case_seconds,
            memory_bytes=settings.container_memory_bytes,
            cpus=settings.container_cpus,
            gpu=settings.container_gpu,
            host_paths=parse_host_paths(settings.sandbox_host_paths),
            runner_socket=Path(settings.sandbox_runner_socket) if settings.sandbox_runner_socket else None,
            max_image_bytes=settings.max_container_bytes,
        )

    def gpu_index(self) -> int | None:
        if self.gpu == "none":
            return None
        if self.gpu == "auto":
            return 0 if gpu_present() else None
        return int(self.gpu)


def case_images(test_set_dir: Path, cases: tuple[str, ...]) -> dict[str, Path]:
    """The image file of each case, from the test set's manifest.json, confined to its images/ folder."""
    images_dir = (test_set_dir / "images").resolve()
    listed: dict[str, str] = {}
    manifest = test_set_dir / "manifest.json"
    if manifest.is_file():
        data: Any = read_json(manifest)
        for entry in data.get("cases", []) if isinstance(data, dict) else []:
            if isinstance(entry, dict) and isinstance(entry.get("name"), str):
                listed[entry["name"]] = str(entry.get("image") or f"images/{entry['name']}")
    found: dict[str, Path] = {}
    for case in cases:
        path = (test_set_dir / listed.get(case, f"images/{case}")).resolve()
        if path.parent != images_dir or not path.is_file():
            raise SandboxError(f"test set {test_set_dir} has no image for case {case!r}")
        found[case] = path
    return found


def case_patches(test_set_dir: Path, cases: tuple[str, ...]) -> dict[str, int]:
    """The patch count of each classification case, from the test set's manifest.json (`patches`)."""
    data: Any = read_json(test_set_dir / "manifest.json")
    listed = {
        entry["name"]: entry.get("patches")
        for entry in (data.get("cases", []) if isinstance(data, dict) else [])
        if isinstance(entry, dict) and isinstance(entry.get("name"), str)
    }
    counts: dict[str, int] = {}
    for case in cases:
        count = listed.get(case)
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise SandboxError(f"test set {test_set_dir}: classification case {case!r} has no patch count")
        counts[case] = count
    return counts


class ContainerRunner:
    """Runs a container submission over the requested cases; see the module docstring."""

    def __init__(self, settings: ContainerSettings | None = None, *, limits: ImageLimits | None = None) -> None:
        self.settings = settings or ContainerSettings()
        self.limits = limits or ImageLimits.for_upload(self.settings.max_image_bytes)
        self.run_info: dict[str, Any] = {}
        if self.settings.backend not in ("podman", "docker"):
            raise SandboxError(
                f"container submissions need the podman or docker backend, not {self.settings.backend!r}"
            )
        # The local engine, or the runner service's (an unprivileged worker with MIDOG_SANDBOX_RUNNER_SOCKET).
        self.backend: Any = get_backend(
            self.settings.backend,
            runtime_dir=self.settings.runtime_dir,
            host_paths=self.settings.host_paths,
            runner_socket=self.settings.runner_socket,
        )

    @classmethod
    def from_settings(cls, settings: Any) -> ContainerRunner:
        """The runner as the process's app.settings.Settings configure it (worker.runners.load_runner)."""
        return cls(ContainerSettings.from_settings(settings))

    def problem(self) -> str | None:
        """Why containers cannot run on this worker (engine missing or not answering), or None."""
        problem: str | None = self.backend.problem()
        return problem

    def run(self, request: Any) -> Path:
        """`request` is a worker.runners.RunRequest.

        Optional attributes: `input_layout` ("2022" | "2021") overrides the setting; `hidden` (default True)
        says whether the phase is hidden, where the participant's line names no case and no exit status;
        `task` (default "detection") picks the contract, "classification" for MIDOG 2025 Track 2 stacks.
        """
        hidden = bool(getattr(request, "hidden", True))
        deadline = time.monotonic() + float(request.timeout_s)
        settings = self.settings
        layout = cast(Layout, getattr(request, "input_layout", None) or settings.layout)
        task = cast(Task, getattr(request, "task", None) or "detection")
        archive = validate_image_archive(Path(request.artifact), limits=self.limits)
        images = case_images(Path(request.test_set_dir), tuple(request.cases))
        patches = case_patches(Path(request.test_set_dir), tuple(images)) if task == "classification" else {}
        user = archive.numeric_user
        uid, gid = (user[0], user[1] or user[0]) if user else (DEFAULT_UID, DEFAULT_UID)
        label = f"eval-{request.evaluation_id}"
        # A previous attempt of this evaluation may have died mid-run: start from a clean slate.
        self.backend.reap(label)
        image_id = self.backend.load_image(Path(request.artifact), archive)
        predictions: dict[str, Any] = {}
        try:
            with scratch_directory(prefix="midog-container-") as work:
                for case, image in images.items():
                    remaining = min(settings.case_seconds, deadline - time.monotonic())
                    if remaining <= 0:
                        raise SubmissionError(TIME_LIMIT if hidden else f"case {case}: {TIME_LIMIT}")
                    spec = SandboxSpec(
                        label=label,
                        labels={"midog.evaluation": str(request.evaluation_id)},
                        image=image_id,
                        wall_seconds=remaining,
                        uid=uid,
                        gid=gid,
                        # the phase's memory limit when the request carries one, else this worker's
                        memory_bytes=int(getattr(request, "memory_bytes", None) or settings.memory_bytes),
                        cpus=settings.cpus,
                        pids=settings.pids,
                        shm_bytes=settings.shm_bytes,
                        tmp_bytes=settings.tmp_bytes,
                        output_bytes=settings.output_bytes,
                        gpu=settings.gpu_index(),
                        workdir=None,
                        base_env=False,
                    )
                    outcome = run_case(
                        self.backend,
                        spec,
                        case=case,
                        image=image,
                        work_dir=Path(work),
                        layout=layout,
                        hidden=hidden,
                        task=task,
                        patches=patches.get(case),
                    )
                    if outcome.reason is not None or outcome.predictions is None:
                        # Organisers get the detail and the log tails in the worker's log; participants one line.
                        sandbox = outcome.sandbox
                        logger.warning(
                            "evaluation %s: %s\n--- stdout (tail) ---\n%s\n--- stderr (tail) ---\n%s",
                            request.evaluation_id,
                            outcome.detail,
                            sandbox.stdout_tail[-4000:] if sandbox else "",
                            sandbox.stderr_tail[-4000:] if sandbox else "",
                        )
                        raise SubmissionError(outcome.reason or "no predictions")
                    predictions[case] = read_json(outcome.predictions)
        finally:
            self.backend.reap(label)
            self.backend.remove_image(image_id)
        output_dir = Path(request.output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        output = output_dir / "predictions.json"
        output.write_text(json.dumps(predictions), encoding="utf-8")
        gpu = settings.gpu_index()
        self.run_info = {
            "backend": settings.backend,
            "image_id": f"sha256:{archive.image_id}",
            "device": "cpu" if gpu is None else f"gpu {gpu}",
        }
        return output
