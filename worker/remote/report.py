"""What a GPU host tells the control host in its heartbeat (app.runner.hosts): its GPU classes, the GPUs it
sees, its cache and the submission kinds its runner can run here.

- GPUs: the names `nvidia-smi --query-gpu=name` lists (one per GPU); no nvidia-smi, or one that fails, is
  reported as no GPU (the worker list shows "none (CPU)") rather than stopping the host.
- Cache: bytes held and the cap, and the hit and miss counters of every job so far (worker.blob_cache).
- Kinds: model and container, each only when worker.runners.runner_problem finds nothing missing (the problem
  line otherwise, for the organisers).
Standard library, worker.blob_cache and worker.runners; must not import app, SQLAlchemy, Celery or torch.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

from worker.blob_cache import BlobCache
from worker.runners import runner_problem

PARTICIPANT_CODE_KINDS = ("model", "container")


def gpu_names(*, timeout_s: float = 10.0) -> list[str]:
    """The GPUs this host sees, by name (empty: none, or no NVIDIA driver)."""
    tool = shutil.which("nvidia-smi")
    if tool is None:
        return []
    try:
        done = subprocess.run(
            [tool, "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return []
    if done.returncode != 0:
        return []
    return [line.strip()[:200] for line in done.stdout.splitlines() if line.strip()][:64]


def cache_report(cache_dir: Path, max_bytes: int) -> dict[str, int]:
    cache = BlobCache(cache_dir, max_bytes=max_bytes)
    stats = cache.stats()
    return {"used_bytes": cache.used_bytes(), "max_bytes": max_bytes, "hits": stats.hits, "misses": stats.misses}


def runnable_kinds(settings: Any) -> tuple[list[str], dict[str, str]]:
    kinds: list[str] = []
    problems: dict[str, str] = {}
    for kind in PARTICIPANT_CODE_KINDS:
        problem = runner_problem(kind, settings)
        if problem is None:
            kinds.append(kind)
        else:
            problems[kind] = problem[:500]
    return kinds, problems


def host_report(
    *,
    name: str,
    gpu_classes: list[str],
    gpus: list[str],
    cache_dir: Path,
    cache_max_bytes: int,
    kinds: list[str],
    problems: dict[str, str],
) -> dict[str, Any]:
    """The heartbeat's body (app.runner.schemas.HeartbeatRequest); GPUs and kinds are found once at start-up
    (`gpu_names`, `runnable_kinds`), the cache is read again for each heartbeat."""
    return {
        "host": name,
        "gpu_classes": gpu_classes,
        "gpus": gpus,
        "cache": cache_report(cache_dir, cache_max_bytes),
        "kinds": kinds,
        "problems": problems,
    }
