"""The pipeline's Runner for OCI container submissions (worker.runners.Runner protocol).

`ContainerRunner.run(request)` decompresses a gzipped archive once into its work directory, validates the
archive again (it may have sat in storage), loads it (or reuses the engine's copy of the same image),
extracts the request's model tarball (read-only at /opt/ml/model), and runs the image as its own USER
(uid, groups and HOME from its /etc/passwd and /etc/group, inside a user namespace that maps its ids to an
unprivileged host range) under the grand-challenge contract (worker.containers.contract): once per case
(`exec`) or as one served container called per case (`invoke`, worker.containers.invoke). HOME,
/opt/ml/model (without a tarball), /opt/ml/checkpoints and /opt/ml/output/data are size-limited tmpfs
copies of the image's; the root file system is read-only. Each case's log (its last LOG_TAIL_LINES
lines, stdout and stderr merged in order) goes to output_dir/logs/<case>.log.
It writes `predictions.json`: case name -> the validated "Multiple points" object (detection), or stack
name -> the validated Track 2 list, one item per patch (`request.task == "classification"`: the patch
counts come from the test set's manifest; the input layout does not apply). Both are what the pipeline's
readers take (`predict`, `predict_stacks`). Any failed case fails the run with that case's one line
(SubmissionError); containers are removed whatever happens, and the image is kept only among the
`keep_images` latest used (reuse). The phase's memory limit, when the request carries one, replaces the
worker's. Settings (`ContainerSettings.from_settings`, from the process's app.settings.Settings):
MIDOG_SANDBOX_BACKEND (podman | docker), MIDOG_SANDBOX_RUNTIME_DIR, MIDOG_CONTAINER_LAYOUT (2022 | 2021),
MIDOG_CONTAINER_CASE_SECONDS (per case, in both modes), MIDOG_CONTAINER_MEMORY_BYTES,
MIDOG_CONTAINER_CPUS, MIDOG_CONTAINER_GPU (auto | none | <index>), MIDOG_SANDBOX_HOST_PATHS
(`/worker/path=/host/path,...` when the worker runs in a container and drives the host's engine through
its socket), MIDOG_SANDBOX_RUNNER_SOCKET.

Imports the stdlib, worker.errors, worker.evaluation, worker.runners, worker.sandbox and worker.containers
only.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

from worker.containers.contract import CaseOutcome, Layout, Task, run_case
from worker.containers.engine import decompress, is_gzip
from worker.containers.image_archive import ImageArchive, ImageLimits, validate_image_archive
from worker.containers.invoke import InvokeError, run_invoke
from worker.containers.model_tarball import ModelTarballError, extract_model_tarball
from worker.errors import SubmissionError
from worker.evaluation.io import read_json
from worker.runners import LOG_TAIL_LINES, LOGS_DIR
from worker.safe_delete import scratch_directory
from worker.sandbox import (
    TIME_LIMIT,
    Mount,
    SandboxError,
    SandboxSpec,
    Scratch,
    get_backend,
    gpu_present,
    parse_host_paths,
)

logger = logging.getLogger(__name__)
MODEL_DIR = "/opt/ml/model"
# Writable like grand-challenge's (the shim's writable_directories), each a size-limited tmpfs.
ML_SCRATCH = ("/opt/ml/checkpoints", "/opt/ml/output/data")


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
    # The image's ids 0..65535 run as host ids userns_base..userns_base+65535 (reserved in /etc/subuid).
    userns_base: int = 1_000_000_000
    # Writable tmpfs sizes: HOME (a copy of the image's), /opt/ml/model (when no model tarball is given),
    # /opt/ml/checkpoints and /opt/ml/output/data.
    home_bytes: int = 2 * 1024**3
    model_scratch_bytes: int = 1024**3
    ml_scratch_bytes: int = 1024**3
    # Model tarballs: the extracted size bound.
    max_model_bytes: int = 20 * 1024**3
    # Participant images kept in the engine after a run for reuse (shards, resubmissions); 0: removed.
    keep_images: int = 2
    # Invoke mode: how long the server may take to answer GET /health after the start.
    health_seconds: float = 300.0

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

    def base_spec(self, request: Any, archive: ImageArchive, image_id: str, model_dir: Path | None) -> SandboxSpec:
        """The sandbox of every case of this run: the image's own user, its writable paths, the limits."""
        settings = self.settings
        user = archive.run_user
        scratch = [Scratch(target, settings.ml_scratch_bytes) for target in ML_SCRATCH]
        mounts: list[Mount] = []
        if model_dir is not None:
            mounts.append(Mount(model_dir, MODEL_DIR))
        else:
            scratch.append(Scratch(MODEL_DIR, settings.model_scratch_bytes))
        if user.writable_home is not None and not user.writable_home.startswith("/opt/ml"):
            scratch.append(Scratch(user.writable_home, settings.home_bytes))
        return SandboxSpec(
            label=f"eval-{request.evaluation_id}",
            labels={"midog.evaluation": str(request.evaluation_id)},
            image=image_id,
            wall_seconds=float(request.timeout_s),
            uid=user.uid,
            gid=user.gid,
            groups=user.groups,
            userns_base=settings.userns_base if settings.backend == "podman" else None,
            scratch=tuple(scratch),
            mounts=tuple(mounts),
            env={"HOME": user.home},
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
            merge_output=True,
            log_tail_bytes=256 * 1024,
        )

    def run(self, request: Any) -> Path:
        """`request` is a worker.runners.RunRequest (see there for each field)."""
        deadline = time.monotonic() + float(request.timeout_s)
        # Failure lines quote causes and case names only where the phase lets participants read logs.
        hidden = bool(getattr(request, "hidden", True)) and not bool(getattr(request, "show_logs", False))
        layout = cast(Layout, getattr(request, "input_layout", None) or self.settings.layout)
        task = cast(Task, getattr(request, "task", None) or "detection")
        mode = str(getattr(request, "run_mode", "exec") or "exec")
        if mode not in ("exec", "invoke"):
            raise SandboxError(f"unknown container run mode {mode!r} (exec | invoke)")
        images = case_images(Path(request.test_set_dir), tuple(request.cases))
        patches = case_patches(Path(request.test_set_dir), tuple(images)) if task == "classification" else {}
        output_dir = Path(request.output_dir)
        (output_dir / LOGS_DIR).mkdir(parents=True, exist_ok=True)
        label = f"eval-{request.evaluation_id}"
        # A previous attempt of this evaluation may have died mid-run: start from a clean slate.
        self.backend.reap(label)
        with scratch_directory(prefix="midog-container-") as work_root:
            work = Path(work_root)
            artifact = Path(request.artifact)
            if is_gzip(artifact):
                artifact = decompress(artifact, work / "image.tar")
            archive = validate_image_archive(artifact, limits=self.limits)
            model_dir = self._model(request, work)
            image_id = self.backend.load_image(artifact, archive)
            if artifact != Path(request.artifact):
                artifact.unlink()  # the engine holds the image now; the copy would only take disk
            try:
                spec = self.base_spec(request, archive, image_id, model_dir)
                if mode == "invoke":
                    predictions = self._invoke(request, spec, images, patches, work, layout, task, hidden, deadline)
                else:
                    predictions = self._exec(request, spec, images, patches, work, layout, task, hidden, deadline)
            finally:
                self.backend.reap(label)
                release = getattr(self.backend, "release_image", None)
                if callable(release):
                    release(image_id, self.settings.keep_images)
                else:
                    self.backend.remove_image(image_id)
        output = output_dir / "predictions.json"
        output.write_text(json.dumps(predictions), encoding="utf-8")
        gpu = self.settings.gpu_index()
        self.run_info = {
            "backend": self.settings.backend,
            "image_id": f"sha256:{archive.image_id}",
            "device": "cpu" if gpu is None else f"gpu {gpu}",
            "run_mode": mode,
        }
        return output

    def _model(self, request: Any, work: Path) -> Path | None:
        archive = getattr(request, "model_archive", None)
        if archive is None:
            return None
        destination = work / "model"
        try:
            extract_model_tarball(Path(archive), destination, max_bytes=self.settings.max_model_bytes)
        except ModelTarballError as exc:
            raise SubmissionError(str(exc)) from None
        # The container's user (an unprivileged host id) reads it through the read-only bind.
        destination.chmod(0o755)
        return destination

    def _write_log(self, request: Any, case: str, lines: list[str]) -> None:
        path = Path(request.output_dir) / LOGS_DIR / f"{case}.log"
        tail = lines[-LOG_TAIL_LINES:]
        path.write_text("\n".join(tail) + ("\n" if tail else ""), encoding="utf-8")

    def _fail(self, request: Any, outcome: CaseOutcome) -> SubmissionError:
        # Organisers get the detail and the log tail in the worker's log (and the logs/ files).
        logger.warning("evaluation %s: %s", request.evaluation_id, outcome.detail)
        return SubmissionError(outcome.reason or "no predictions")

    def _exec(
        self,
        request: Any,
        spec: SandboxSpec,
        images: dict[str, Path],
        patches: dict[str, int],
        work: Path,
        layout: Layout,
        task: Task,
        hidden: bool,
        deadline: float,
    ) -> dict[str, Any]:
        predictions: dict[str, Any] = {}
        for case, image in images.items():
            remaining = min(self.settings.case_seconds, deadline - time.monotonic())
            if remaining <= 0:
                raise SubmissionError(TIME_LIMIT if hidden else f"case {case}: {TIME_LIMIT}")
            outcome = run_case(
                self.backend,
                replace(spec, wall_seconds=remaining),
                case=case,
                image=image,
                work_dir=work,
                layout=layout,
                hidden=hidden,
                task=task,
                patches=patches.get(case),
            )
            if outcome.sandbox is not None:
                self._write_log(request, case, outcome.sandbox.stdout_tail.splitlines())
            if outcome.reason is not None or outcome.predictions is None:
                raise self._fail(request, outcome)
            predictions[case] = read_json(outcome.predictions)
        return predictions

    def _invoke(
        self,
        request: Any,
        spec: SandboxSpec,
        images: dict[str, Path],
        patches: dict[str, int],
        work: Path,
        layout: Layout,
        task: Task,
        hidden: bool,
        deadline: float,
    ) -> dict[str, Any]:
        if self.settings.runner_socket is not None:
            raise SandboxError("invoke mode needs the worker's own engine (not MIDOG_SANDBOX_RUNNER_SOCKET)")
        try:
            produced = run_invoke(
                self.backend,
                replace(spec, wall_seconds=max(deadline - time.monotonic(), 1.0)),
                images=images,
                work_dir=work,
                layout=layout,
                task=task,
                patches=patches,
                hidden=hidden,
                case_seconds=self.settings.case_seconds,
                health_seconds=self.settings.health_seconds,
                on_log=lambda case, lines: self._write_log(request, case, lines),
            )
        except InvokeError as failure:
            raise self._fail(request, failure.outcome) from None
        return {case: read_json(path) for case, path in produced.items()}
