"""A GPU host: a Celery worker on its gpu queues whose `evaluation.run` talks only to the control host's API.

    claim -> manifest -> inputs into the blob cache (by SHA-256, verified) -> a test-set directory of manifest
    and images (hard links to the cache; no ground truth exists here) -> the existing runner
    (worker.runners.load_runner) through worker.pipeline.produce -> upload the output, features and logs ->
    finish (the control host scores it on its cpu queue)

Rules:
- No database, no storage credentials, no shared disk: `HostConfig` holds the API address, the runner token,
  the cache and a work directory, and that is all a run reads. The process refuses to start with a database
  URL in its environment (app.cli.gpu_host).
- The host serves the GPU classes of `HostConfig.gpu_classes` (the queues `gpu`/`gpu-<class>` it consumes) and
  sends them with each claim: the API refuses a job of another class (409), which is then not run here.
- A heartbeat thread (`watch_token`) reports the host to the worker list: classes, GPUs, cache
  (worker.remote.report).
- The lease is renewed through the API while participant code runs (worker.lease.LeaseKeeper); a lost lease
  (cancelled, expired and taken over) stops the run, which then lands nothing.
- A refused token (revoked, expired) stops the host at once: the claim gives its message back to the queue for
  another host, a running job stops at its next renewal, and a watcher thread that pings the API every
  `ping_interval_s` ends the worker (warm shutdown) even while it is idle.
- Faults: the submission's (SubmissionError, the time limit) are reported as participant failures; anything
  else (the API or the object store away beyond the retry budget, a cache error, a runner missing here) as
  infrastructure failures, which the control host retries on any host up to its attempt cap.

Imports Celery, worker.* and app.settings (the runner's configuration: which runner, sandbox options, time
limits); must not import app.db, app.tables, worker.tasks, worker.heartbeat (anything that opens a database),
FastAPI or torch (tests/test_import_boundaries.py).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from celery import Celery, Task
from celery.exceptions import Reject, SoftTimeLimitExceeded

from worker.blob_cache import BlobCache, BlobCacheError
from worker.celery_app import configure
from worker.datasets.manifest import TestSet
from worker.errors import SubmissionError
from worker.lease import LeaseKeeper, LeaseLostError
from worker.pipeline import PipelineInput, produce
from worker.remote.client import ApiUnavailableError, JobClient, RunnerClient, TokenRefusedError
from worker.runners import TIME_LIMIT_MESSAGE, load_runner
from worker.safe_delete import discard_tree
from worker.time_limits import Limits
from worker.vocabulary import DEFAULT_GPU_CLASS, RUN

logger = logging.getLogger(__name__)


@dataclass
class HostConfig:
    api: str
    token: str
    name: str  # the host's name in leases and results (with the process id of each run)
    cache_dir: Path
    cache_max_bytes: int
    work_dir: Path
    settings: Any  # app.settings.Settings of this host: runner choice, sandbox options, time limits
    gpu_classes: list[str] = field(default_factory=lambda: [DEFAULT_GPU_CLASS])  # a claim of another is refused


_config: HostConfig | None = None


def host_app(config: HostConfig, *, broker_url: str, queues: list[str]) -> Celery:
    """The GPU host's Celery app: the control host's reliability settings, its own queues, one job per child."""
    global _config
    _config = config
    settings = config.settings
    celery = Celery("midog_gpu_host", set_as_current=True)
    configure(
        celery,
        broker_url=broker_url,
        limits=Limits.from_settings(settings),
        redis_key_prefix=settings.redis_key_prefix,
    )
    celery.conf.update(
        task_queues={name: {"exchange": name, "routing_key": name} for name in queues},
        task_default_queue=queues[0],
        task_default_exchange=queues[0],
        task_default_routing_key=queues[0],
        beat_schedule={},
        # One participant job per GPU and a fresh process per job (as the control host's gpu workers).
        worker_concurrency=1,
        worker_max_tasks_per_child=1,
    )
    celery.task(name=RUN, bind=True)(run_remote)
    return celery


def _stop_host(reason: str) -> None:
    """Warm shutdown of this host's worker (its main process): it takes no further message."""
    from billiard import current_process

    logger.error("GPU host stops: %s", reason)
    in_pool_child = current_process().name != "MainProcess"
    os.kill(os.getppid() if in_pool_child else os.getpid(), signal.SIGTERM)


def watch_token(
    client: RunnerClient,
    *,
    interval_s: float,
    stop: threading.Event,
    report: Callable[[], dict[str, Any]] | None = None,
    beat_file: Path | None = None,
) -> threading.Thread:
    """A thread of the worker's main process: sends the host's heartbeat (`report()`, app.runner.hosts), or
    pings the API without one; a refused token stops the host. The first heartbeat goes at once; the next
    within the interval the API asks for, if that is shorter than `interval_s` (the worker list marks a host
    stale when it has not been heard of for the API's staleness window). Each heartbeat the API took touches
    `beat_file` (the container health check reads its age: docker/healthcheck.py gpu-host)."""

    def beat() -> float:
        if report is None:
            client.ping()
            return interval_s
        answer = client.heartbeat(report())
        return min(interval_s, float(answer.get("heartbeat_s") or interval_s))

    def loop() -> None:
        wait = 0.0
        while not stop.wait(wait):
            wait = interval_s
            try:
                wait = beat()
                if beat_file is not None:
                    beat_file.touch()
            except TokenRefusedError as exc:
                logger.error("the runner token was refused (%s)", exc)
                os.kill(os.getpid(), signal.SIGTERM)
                return
            except Exception as exc:  # the API away: the jobs' own calls retry; keep watching
                logger.warning("runner ping failed: %s", exc)

    thread = threading.Thread(target=loop, name="runner token watch", daemon=True)
    thread.start()
    return thread


def run_remote(self: Task, *, evaluation_id: int) -> str:
    """`evaluation.run` on a GPU host: claim through the API, run, upload; every outcome reported there."""
    config = _config
    assert config is not None, "host_app() configures the GPU host before its worker starts"
    client = RunnerClient(config.api, config.token)
    try:
        owner = f"{config.name}:{os.getpid()}"
        try:
            claim = client.claim(evaluation_id, owner, config.gpu_classes)
        except TokenRefusedError as exc:
            _stop_host(f"runner token refused: {exc}")
            left = f"runner token refused; evaluation {evaluation_id} left to another host"
            raise Reject(left, requeue=True) from exc
        except ApiUnavailableError as exc:
            raise self.retry(countdown=5, exc=exc, max_retries=None) from exc
        except LeaseLostError as exc:  # 409 at claim: nothing for a GPU host to run (a predictions file)
            logger.warning("evaluation %s not claimed: %s", evaluation_id, exc)
            return "refused"
        if not claim["claimed"]:
            logger.info("evaluation %s not run: %s", evaluation_id, claim["outcome"])
            return str(claim["outcome"])
        job = client.job(evaluation_id, int(claim["attempt"]), str(claim["job_key"]))
        return _run_claimed(config, job, owner, heartbeat_s=float(claim["heartbeat_s"]))
    finally:
        client.close()


def _run_claimed(config: HostConfig, job: JobClient, owner: str, *, heartbeat_s: float) -> str:
    what = f"evaluation {job.evaluation_id} attempt {job.attempt}"
    work = config.work_dir / f"evaluation-{job.evaluation_id}-attempt-{job.attempt}"
    try:
        _run_job(config, job, work, owner, heartbeat_s=heartbeat_s)
        return "uploaded"
    except LeaseLostError as exc:
        logger.info("%s: %s; stopped", what, exc)
        return "lease lost"
    except TokenRefusedError as exc:
        _stop_host(f"runner token refused during {what}: {exc}")
        return "token refused"
    except SubmissionError as exc:
        return _report(job, "participant", str(exc) or "the submission could not be evaluated")
    except SoftTimeLimitExceeded:
        return _report(job, "participant", TIME_LIMIT_MESSAGE)
    except (ApiUnavailableError, BlobCacheError, OSError, Exception):
        logger.exception("%s failed on this host", what)
        return _report(job, "infrastructure", "")
    finally:
        discard_tree(work)


def _report(job: JobClient, kind: str, message: str) -> str:
    try:
        job.fail(kind, message, traceback.format_exc())
    except (LeaseLostError, TokenRefusedError, ApiUnavailableError) as exc:
        # Not reported: the lease expires and the control host's reconciler retries the evaluation.
        logger.warning("evaluation %s: failure not reported (%s)", job.evaluation_id, exc)
    return f"failed ({kind})"


def _place(blob: Path, target: Path) -> None:
    """Put a cached blob at `target` in the job's test-set directory: a hard link (no copy), else a copy."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(blob, target)
    except OSError:
        import shutil

        shutil.copyfile(blob, target)


def _safe_relative(path: str) -> str:
    parts = Path(path).parts
    if not parts or Path(path).is_absolute() or any(p in ("..", ".") or p.startswith(".") for p in parts):
        raise ValueError(f"input path {path!r} of the manifest is not a plain relative path")
    if parts[0] == "ground-truth":
        raise ValueError(f"input path {path!r} lies under ground-truth/: refused")
    return path


def _run_job(config: HostConfig, job: JobClient, work: Path, owner: str, *, heartbeat_s: float) -> None:
    manifest = job.manifest()
    cache = BlobCache(config.cache_dir, max_bytes=config.cache_max_bytes)
    discard_tree(work)
    set_dir = work / "set"
    with cache.job() as cached:
        job.progress(0.02, "fetching the inputs")
        for entry in manifest["test_set"]["files"]:
            blob = cached.get(str(entry["sha256"]), int(entry["size"]), job.fetch(entry))
            _place(blob, set_dir / _safe_relative(str(entry["path"])))
        set_stats = {
            "hits": cached.stats.hits,
            "misses": cached.stats.misses,
            "bytes_fetched": cached.stats.bytes_fetched,
        }
        submission = manifest["submission"]
        artifact = work / "submission" / Path(str(submission["name"])).name
        _place(cached.get(str(submission["sha256"]), int(submission["size"]), job.fetch(submission)), artifact)
        model_archive = None
        if manifest.get("model_archive"):
            model = manifest["model_archive"]
            model_archive = work / "model" / Path(str(model["name"])).name
            _place(cached.get(str(model["sha256"]), int(model["size"]), job.fetch(model)), model_archive)
        total_fetched = cached.stats.bytes_fetched
    settings = config.settings
    inp = PipelineInput(
        evaluation_id=job.evaluation_id,
        kind=str(manifest["kind"]),
        artifact=artifact,
        test_set_dir=set_dir,
        work_dir=work,
        timeout_s=min(float(manifest["timeout_s"]), float(settings.sandbox_timeout_s)),
        rules=str(manifest["rules"]),
        hidden=bool(manifest["hidden"]),
        input_layout=manifest.get("input_layout"),
        memory_bytes=manifest.get("memory_bytes"),
        task=str(manifest["task"]),
        model_archive=model_archive,
        run_mode=str(manifest.get("run_mode") or "exec"),
        show_logs=bool(manifest.get("show_logs")),
        logs_dir=work / "kept-logs",
    )
    test_set = TestSet.open(set_dir)
    run_info: dict[str, Any] = {}
    features: dict[str, Any] = {}
    started = time.monotonic()
    keeper = LeaseKeeper(job.renew, interval_s=heartbeat_s, what=f"evaluation {job.evaluation_id}")
    try:
        with keeper:
            produced = produce(
                inp,
                test_set,
                runner_for=lambda kind: load_runner(kind, settings),
                progress=job.progress,
                run_info=run_info,
                case_features=features,
            )
    finally:
        _upload_logs(job, work / "kept-logs")
    run_seconds = time.monotonic() - started
    job.progress(0.78, "uploading the output")
    job.put_file("/predictions", produced)
    if features:
        shown = features if "error" in features else {case: list(map(float, v)) for case, v in features.items()}
        job.put_bytes("/features", json.dumps(shown).encode())
    run_info.update(
        {
            "worker": f"gpu-host {owner}",
            "fetch": {"test_set": set_stats, "bytes_fetched": total_fetched},
        }
    )
    job.finish(round(run_seconds, 3), run_info)


def _upload_logs(job: JobClient, directory: Path) -> None:
    """The run's log tails, best effort (a failed run's logs are the ones that matter)."""
    if not directory.is_dir():
        return
    for path in sorted(directory.glob("*.log")):
        try:
            job.put_file(f"/logs/{path.name.removesuffix('.log')}", path)
        except (ApiUnavailableError, OSError) as exc:
            logger.warning("evaluation %s: log %s not uploaded (%s)", job.evaluation_id, path.name, exc)
