"""The pipeline's Runner for model-archive submissions (worker.runners.Runner protocol).

`ModelArchiveRunner.run(request)` checks and unpacks the uploaded archive with worker.archives (member
pre-scan, manifest schema, byte-counted extraction; the model itself is never loaded here), then runs our
inference runtime, `python -m worker.inference.run`, INSIDE the sandbox of worker.sandbox: the worker's
interpreter, virtual environment and the `worker` package read-only (`python_runtime`), the test set's
images/ and a manifest.json listing only the requested cases read-only at /input (never ground-truth/),
the unpacked archive read-only at /archive, the decoded-image cache read-only at /cache when configured,
and a size-bounded /output. No network, a non-root uid, memory/pids/CPU limits, the request's wall clock,
and the GPU when one is present. The runtime's output comes back as a directory of one file per case:
per image "Multiple points" for a detection phase (`worker.evaluation.io.read_predictions`), per stack
the MIDOG 2025 Track 2 list for a classification phase (`request.task == "classification"`; the manifest
at /input keeps the set's task and each stack's `patches`; `worker.evaluation.classification.
read_predictions`). An archive of the other task (a detector in a classification phase or a classifier
in a detection phase) is refused before anything runs, with `check_task`'s line, hidden phase or not.

A failed run becomes one participant line (SubmissionError): the limits as the sandbox reports them, and
in a hidden phase (`request.hidden`, default True) "the program failed" for anything else, since the
archive's code chooses its exit status and its output. Organisers get the detail and the stdout/stderr
tails in the worker's log (logger `worker.model_runner`). Faults of the sandbox itself raise SandboxError
(a RetryableError).

Settings (`ModelSettings.from_settings`, from the process's app.settings.Settings): MIDOG_MODEL_SANDBOX_BACKEND,
else MIDOG_SANDBOX_BACKEND (bwrap | podman | docker; default bwrap), MIDOG_SANDBOX_RUNTIME_DIR,
MIDOG_SANDBOX_HOST_PATHS, MIDOG_MODEL_IMAGE (podman/docker: an image holding the worker's Python stack at
the worker's paths, e.g. the worker's own image), MIDOG_MODEL_MEMORY_BYTES, MIDOG_MODEL_CPUS,
MIDOG_MODEL_PIDS, MIDOG_MODEL_GPU (auto | none | <index>), MIDOG_DECODED_CACHE_DIR, MIDOG_SANDBOX_UID (the uid
and gid of the participant's code, 10001), MIDOG_SANDBOX_RUNNER_SOCKET (run through the sandbox runner
service: an unprivileged worker), MIDOG_SANDBOX_ALLOW_MISSING_CONTROLS. `reap_leftovers(settings)` is the GPU
worker's start-up sweep.

Imports the stdlib, worker.errors, worker.archives and worker.sandbox only; must not import torch, Celery,
SQLAlchemy or FastAPI.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from worker.archives import (
    MANIFEST_NAME,
    AnyManifest,
    ArchiveLimits,
    check_task,
    extract_archive,
    validate_archive,
)
from worker.archives.manifest import loads_manifest
from worker.errors import SubmissionError
from worker.safe_delete import discard_tree, scratch_directory
from worker.sandbox import (
    BACKENDS,
    TIME_LIMIT,
    Backend,
    Mount,
    SandboxError,
    SandboxResult,
    SandboxSpec,
    get_backend,
    gpu_present,
    isolation,
    parse_host_paths,
)
from worker.sandbox.runtime import python_runtime

logger = logging.getLogger(__name__)

# Paths inside the sandbox.
INPUT_DIR = "/input"
ARCHIVE_DIR = "/archive"
CACHE_DIR = "/cache"
PREDICTIONS_DIR = "predictions"  # under /output
STATS_FILE = "stats.json"  # under /output, beside (not inside) the predictions directory
FEATURES_DIR = "features"  # under /output: per-case features of a detector that declares them
# The runtime's exit status for an archive, images or model output that do not match the manifest.
RUNTIME_INPUT_ERROR = 2


@dataclass(frozen=True)
class ModelSettings:
    """Limits and wiring of sandboxed model runs (`from_settings`: the MIDOG_* settings)."""

    backend: str = "bwrap"
    runtime_dir: Path | None = None
    image: str | None = None
    python: str = "python"
    memory_bytes: int = 16 * 1024**3
    cpus: float = 4.0
    # torch starts a thread per core for intra-op work plus loader threads: they all count against pids.
    pids: int = 512
    shm_bytes: int = 2 * 1024**3
    tmp_bytes: int = 2 * 1024**3
    output_bytes: int = 256 * 1024**2
    gpu: str = "auto"
    cache_dir: Path | None = None
    host_paths: Mapping[str, str] = field(default_factory=dict)
    # The uid and gid participant code runs as: never the worker's own (the runner service refuses it).
    uid: int = 10001

    # Through the sandbox runner service listening here (an unprivileged worker); None: in this process.
    runner_socket: Path | None = None
    # Isolation controls bwrap may run without (the deployment's explicit opt-out; none by default).
    allowed_missing: frozenset[str] = frozenset()
    # The upload limit of model archives (MIDOG_MAX_MODEL_BYTES): extraction applies the upload check's limits.
    max_archive_bytes: int = ArchiveLimits.max_archive_bytes

    @classmethod
    def from_settings(cls, settings: Any) -> ModelSettings:
        """From an app.settings.Settings (read by attribute: this module does not import the service)."""
        # Model archives may use another backend than containers (bwrap here, docker for containers).
        backend = settings.model_sandbox_backend or settings.sandbox_backend or "bwrap"
        if backend not in BACKENDS:
            raise SandboxError(f"MIDOG_MODEL_SANDBOX_BACKEND must be one of {', '.join(BACKENDS)}, not {backend!r}")
        return cls(
            backend=backend,
            runtime_dir=settings.sandbox_runtime_dir,
            image=settings.model_image or None,
            python=settings.model_python,
            memory_bytes=settings.model_memory_bytes,
            cpus=settings.model_cpus,
            pids=settings.model_pids,
            gpu=settings.model_gpu,
            cache_dir=settings.decoded_cache_dir,
            host_paths=parse_host_paths(settings.sandbox_host_paths),
            uid=settings.sandbox_uid,
            runner_socket=Path(settings.sandbox_runner_socket) if settings.sandbox_runner_socket else None,
            allowed_missing=isolation.allowed_missing(settings.sandbox_allow_missing_controls),
            max_archive_bytes=settings.max_model_bytes,
        )

    def backend_named(self, name: str) -> Backend:
        """The sandbox backend `name` wired as these settings say (runner service, runtime dir, host paths)."""
        return get_backend(
            name,
            runtime_dir=self.runtime_dir,
            host_paths=self.host_paths,
            runner_socket=self.runner_socket,
            allowed_missing=self.allowed_missing,
        )

    def gpu_index(self) -> int | None:
        if self.gpu == "none":
            return None
        if self.gpu == "auto":
            return 0 if gpu_present() else None
        try:
            return int(self.gpu)
        except ValueError:
            raise SandboxError(f"MIDOG_MODEL_GPU must be auto, none or a GPU index, not {self.gpu!r}") from None


def select_cases(test_set_dir: Path, cases: Sequence[str], destination: Path) -> Path:
    """Write to `destination` the test set's manifest.json reduced to `cases` (in that order); return it.

    Only the manifest and images/ of the set ever reach the sandbox; every listed image must be a file in
    images/. A case the set lacks is an infrastructure fault (the pipeline asked for it), not the submission's.
    """
    manifest_path = test_set_dir / "manifest.json"
    try:
        doc: Any = json.loads(manifest_path.read_text(encoding="utf-8"))
        entries = {str(entry["name"]): entry for entry in doc["cases"]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SandboxError(f"test set {test_set_dir}: unreadable manifest.json ({exc})") from exc
    images_dir = (test_set_dir / "images").resolve()
    chosen = []
    for name in cases:
        entry = entries.get(name)
        if entry is None:
            raise SandboxError(f"test set {test_set_dir} has no case {name!r}")
        image = PurePosixPath(str(entry.get("image") or f"images/{name}"))
        path = (test_set_dir / image).resolve()
        if image.is_absolute() or path.parent != images_dir or not path.is_file():
            raise SandboxError(f"test set {test_set_dir}: case {name!r} has no image file in images/")
        chosen.append({**entry, "image": f"images/{path.name}"})
    destination.write_text(json.dumps({**doc, "cases": chosen}), encoding="utf-8")
    destination.chmod(0o644)
    return destination


def unpack_archive(artifact: Path, work_dir: Path, limits: ArchiveLimits | None = None) -> tuple[Path, AnyManifest]:
    """The archive's folder holding manifest.json, and its manifest: a zip is checked and extracted under
    `work_dir`, an unpacked directory (organisers' tools) is checked in place. Raises ArchiveError (a
    SubmissionError)."""
    if artifact.is_dir():
        return artifact, validate_archive(artifact, limits=limits)
    root = extract_archive(artifact, work_dir / "archive", limits=limits)
    manifest = loads_manifest((root / MANIFEST_NAME).read_bytes())  # checked by the extraction already
    # Readable by the sandbox's uid, whatever the worker's umask.
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return root, manifest


def run_stats(path: Path) -> dict[str, Any]:
    """The runtime's timing figures (written inside the sandbox, so only logged, never trusted)."""
    try:
        stats = json.loads(path.read_text(encoding="utf-8")[:65536])
    except (OSError, ValueError):
        return {}
    return stats if isinstance(stats, dict) else {}


def run_label(evaluation_id: int, run_name: str) -> str:
    """`model-<evaluation>-<run>`: shards of one evaluation running side by side never reap each other."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", run_name)
    return f"model-{evaluation_id}-{name}"[:63]


def _runtime_error_line(result: SandboxResult) -> str | None:
    """The runtime's own one-line diagnosis (`error: ...` on stderr, exit status 2), for public phases."""
    if result.exit_code != RUNTIME_INPUT_ERROR:
        return None
    for line in reversed(result.stderr_tail.strip().splitlines()):
        if line.startswith("error: "):
            return line.removeprefix("error: ").strip()[:300] or None
    return None


def participant_line(result: SandboxResult, *, hidden: bool) -> str | None:
    """The one line a participant sees for a sandboxed run (None when it succeeded)."""
    if result.ok:
        return None
    if not hidden and not (result.timed_out or result.memory_exceeded or result.output_exceeded):
        detail = _runtime_error_line(result)
        if detail is not None:
            return f"the model archive could not be run: {detail}"
    return result.participant_reason(hidden=hidden)


class ModelArchiveRunner:
    """Runs a model-archive submission over the requested cases; see the module docstring."""

    def __init__(self, settings: ModelSettings | None = None) -> None:
        self.settings = settings or ModelSettings()
        self.run_info: dict[str, Any] = {}
        self.backend: Backend = self.settings.backend_named(self.settings.backend)

    @classmethod
    def from_settings(cls, settings: Any) -> ModelArchiveRunner:
        """The runner as the process's app.settings.Settings configure it (worker.runners.load_runner)."""
        return cls(ModelSettings.from_settings(settings))

    def problem(self) -> str | None:
        """Why model archives cannot run on this worker, or None (the worker's capability report)."""
        if self.settings.backend != "bwrap" and self.settings.image is None:
            return f"model archives on the {self.settings.backend} backend need MIDOG_MODEL_IMAGE"
        return self.backend.problem()

    def spec_for(self, request: Any, *, mounts: Sequence[Mount], wall_seconds: float) -> SandboxSpec:
        """The sandbox of one run: the request's time and memory limits, the settings' other limits."""
        settings = self.settings
        memory = getattr(request, "memory_bytes", None) or settings.memory_bytes
        gpu = settings.gpu_index()
        threads = str(max(1, int(settings.cpus)))
        env = {
            "OMP_NUM_THREADS": threads,
            "MKL_NUM_THREADS": threads,
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONNOUSERSITE": "1",
        }
        if gpu is not None and settings.backend == "bwrap":
            # bwrap binds only /dev/nvidia<gpu>; CUDA must not try the others. Containers see one GPU, index 0.
            env.update(CUDA_DEVICE_ORDER="PCI_BUS_ID", CUDA_VISIBLE_DEVICES=str(gpu))
        return SandboxSpec(
            label=run_label(request.evaluation_id, Path(request.output_dir).name),
            labels={"midog.evaluation": str(request.evaluation_id)},
            image=settings.image,
            mounts=tuple(mounts),
            wall_seconds=wall_seconds,
            memory_bytes=int(memory),
            cpus=settings.cpus,
            pids=settings.pids,
            shm_bytes=settings.shm_bytes,
            tmp_bytes=settings.tmp_bytes,
            output_bytes=settings.output_bytes,
            output_files=2 * len(request.cases) + 64,  # detections, and features when the archive declares them
            gpu=gpu,
            env=env,
            uid=settings.uid,
            gid=settings.uid,
            # In an image, its own ENV (PATH to its virtual environment) stays in force.
            base_env=settings.backend == "bwrap",
        )

    def command(self, interpreter: str, *, gpu: bool, cache: bool, features: bool = False) -> list[str]:
        argv = [interpreter, "-m", "worker.inference.run", "--archive", ARCHIVE_DIR, "--images", INPUT_DIR]
        argv += ["--output", f"/output/{PREDICTIONS_DIR}", "--stats", f"/output/{STATS_FILE}"]
        if features:
            argv += ["--features", f"/output/{FEATURES_DIR}"]
        # one image loader per CPU granted, 2 to 8 (the rule of worker.inference.run.default_loaders)
        loaders = min(8, max(2, int(self.settings.cpus)))
        argv += ["--device", "cuda" if gpu else "cpu", "--loaders", str(loaders)]
        return argv + (["--cache", CACHE_DIR] if cache else [])

    def run(self, request: Any) -> Path:
        """`request` is a worker.runners.RunRequest; `hidden` (default True) and `memory_bytes` are optional."""
        hidden = bool(getattr(request, "hidden", True))
        task = str(getattr(request, "task", "detection"))
        deadline = time.monotonic() + float(request.timeout_s)
        settings = self.settings
        output_dir = Path(request.output_dir)
        if settings.backend == "bwrap":
            runtime_mounts, interpreter = python_runtime(("worker",))
        elif settings.image is None:
            raise SandboxError(
                f"model archives on the {settings.backend} backend need MIDOG_MODEL_IMAGE (an image with the "
                "worker's Python stack); use MIDOG_MODEL_SANDBOX_BACKEND=bwrap otherwise"
            )
        else:
            runtime_mounts, interpreter = (), settings.python
        cache = settings.cache_dir if settings.cache_dir is not None and settings.cache_dir.is_dir() else None
        label = run_label(request.evaluation_id, output_dir.name)
        # A previous attempt of this evaluation may have died mid-run: start from a clean slate, and never
        # read detections an earlier attempt left in the same output directory.
        self.backend.reap(label)
        discard_tree(output_dir)
        output_dir.parent.mkdir(parents=True, exist_ok=True)
        # Beside the output (not in /tmp): a worker driving the host's engine maps only its data paths.
        with scratch_directory(prefix=f".{output_dir.name}-input-", parent=output_dir.parent) as work:
            work.chmod(0o755)
            limits = ArchiveLimits.for_upload(settings.max_archive_bytes)
            archive, archive_manifest = unpack_archive(Path(request.artifact), work, limits)
            check_task(archive_manifest, task)
            test_set_dir = Path(request.test_set_dir)
            manifest = select_cases(test_set_dir, tuple(request.cases), work / "manifest.json")
            mounts = [
                *runtime_mounts,
                Mount(test_set_dir / "images", f"{INPUT_DIR}/images"),
                Mount(manifest, f"{INPUT_DIR}/manifest.json"),
                Mount(archive, ARCHIVE_DIR),
                *([Mount(cache, CACHE_DIR)] if cache is not None else []),
            ]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SubmissionError(TIME_LIMIT)
            spec = self.spec_for(request, mounts=mounts, wall_seconds=remaining)
            features = getattr(archive_manifest, "features_method", None) is not None
            argv = self.command(interpreter, gpu=spec.gpu is not None, cache=cache is not None, features=features)
            try:
                result = self.backend.run(spec, argv, output_dir=output_dir)
            finally:
                self.backend.reap(label)
        line = participant_line(result, hidden=hidden)
        predictions = output_dir / PREDICTIONS_DIR
        if line is None and not predictions.is_dir():
            produced = "classifications" if task == "classification" else "detections"
            line = f"the model archive produced no {produced} directory"
        if line is not None:
            logger.warning(
                "evaluation %s: model archive run failed: %s (exit %s, %.1f s)\n--- stdout (tail) ---\n%s\n"
                "--- stderr (tail) ---\n%s",
                request.evaluation_id,
                result.reason,
                result.exit_code,
                result.wall_seconds,
                result.stdout_tail[-4000:],
                result.stderr_tail[-4000:],
            )
            raise SubmissionError(line)
        stats = run_stats(output_dir / STATS_FILE)
        device = str(stats.get("device", "unknown"))
        self.run_info = {"backend": settings.backend, "device": device[:100], "sandbox_seconds": result.wall_seconds}
        unit = "patches" if task == "classification" else "tiles"
        logger.info(
            "evaluation %s: model archive ran %d cases in %.1f s on %s (%s %s/s)",
            request.evaluation_id,
            len(request.cases),
            result.wall_seconds,
            device,
            stats.get(f"{unit}_per_second", "?"),
            unit,
        )
        if spec.gpu is not None and not device.startswith("cuda"):
            # The runtime falls back to the CPU when CUDA does not come up inside the sandbox (driver
            # libraries outside /usr, device nodes missing): results stay right, but organisers must know.
            logger.warning(
                "evaluation %s: GPU %s was given but the model ran on %s", request.evaluation_id, spec.gpu, device
            )
        return predictions


def reap_leftovers(settings: Any) -> int:
    """The GPU worker's start-up sweep: reap every sandbox run left on record by a worker that died.

    `settings`: the process's app.settings.Settings. Reaps the model archives' backend (see ModelSettings)
    and, when MIDOG_SANDBOX_BACKEND names another one (the container submissions'), that one too, under
    MIDOG_SANDBOX_RUNTIME_DIR. Every run of this runtime directory is reaped (podman and docker containers carry
    its digest as an owner label), so GPU workers sharing a host need a runtime directory each; runs of other
    workers or servers on the same engine are left alone. MIDOG_SANDBOX_REAP_ON_START=0 turns the sweep off.
    Returns the number of runs reaped.
    """
    if not settings.sandbox_reap_on_start:
        return 0
    model = ModelSettings.from_settings(settings)
    names = dict.fromkeys([model.backend, settings.sandbox_backend or model.backend])
    reaped = 0
    for name in names:
        backend = model.backend_named(name)
        try:
            backend.check()
        except SandboxError as exc:
            logger.info("no %s sandbox sweep at start-up: %s", name, exc)
            continue
        count = sum(backend.reap(label) for label in backend.leftover_labels())
        if count:
            logger.warning("reaped %d sandbox runs left by a previous worker (%s)", count, name)
        reaped += count
    return reaped
