"""`midog-eval gpu-host`: a GPU host that needs only the API's address, a runner token and the broker.

    midog-eval gpu-host --api https://eval.example.org --token-file /etc/midog/runner-token \
        --broker redis://control:6379/0 --cache-dir /var/cache/midog [--gpu-class gpu --gpu-class a100]

It runs a Celery worker on the queues of the GPU classes it serves (`--gpu-class`, repeatable, default `gpu`;
worker.vocabulary.gpu_queue; `--queues gpu,gpu-a100` names the queues instead), one job at a time, a fresh
process per job, whose tasks talk only to the API (worker.remote.host); a claim of a job of another class is
refused by the API. A heartbeat thread reports the host (classes, GPUs, cache) to the worker list. Its
temporary files go under <cache-dir>/tmp (app.settings.use_temporary_directory). It refuses to start with a
database URL in its environment, with a token file others can read, or when the API refuses the token.
Celery and the worker are imported inside the command. Must not import FastAPI, SQLAlchemy or torch.
"""

from __future__ import annotations

import re
import socket
import stat
import sys
from pathlib import Path

import typer

from app.cli.worker import celery_worker_argv, private_files

# Environment variables a GPU host must not hold: the database (and the object store's key pair).
FORBIDDEN_ENV = ("MIDOG_DATABASE_URL", "DATABASE_URL", "MIDOG_S3_SECRET_KEY")
_QUEUE = re.compile(r"gpu(-[a-z0-9]+)*")
GiB = 1024**3


def _refuse(message: str) -> None:
    typer.echo(f"midog-eval gpu-host refuses to start: {message}", err=True)
    raise typer.Exit(2)


def classes_of(gpu_classes: list[str], queues: str | None) -> list[str]:
    """The GPU classes served: each `--gpu-class`, and the class of each `--queues` name; `gpu` when neither."""
    from worker.vocabulary import DEFAULT_GPU_CLASS, GPU_QUEUE, is_gpu_class

    bad = [c for c in gpu_classes if not is_gpu_class(c)]
    if bad:
        raise ValueError(f"--gpu-class {bad[0]!r}: lower-case letters and digits, single dashes inside, at most 32")
    named = list(gpu_classes)
    for queue in parse_queues(queues) if queues else []:
        named.append(DEFAULT_GPU_CLASS if queue == GPU_QUEUE else queue.removeprefix(f"{GPU_QUEUE}-"))
    return list(dict.fromkeys(named)) or [DEFAULT_GPU_CLASS]


def parse_queues(text: str) -> list[str]:
    """`gpu,gpu-a100` -> the queue names, each `gpu` or `gpu-<class>` (lower-case letters, digits, dashes)."""
    queues = [q.strip() for q in text.split(",") if q.strip()]
    bad = [q for q in queues if not _QUEUE.fullmatch(q)]
    if not queues or bad:
        raise ValueError(f"--queues {text!r}: give gpu queues, e.g. gpu or gpu,gpu-a100 (refused: {', '.join(bad)})")
    return list(dict.fromkeys(queues))


def read_token(path: Path) -> str:
    """The runner token in `path` (its first line); the file must be readable by its owner only."""
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(f"--token-file {path}: {exc.strerror or exc}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ValueError(f"--token-file {path}: readable by others (mode {stat.S_IMODE(mode):o}); chmod 600 it")
    token = text.splitlines()[0].strip() if text else ""
    if not token:
        raise ValueError(f"--token-file {path}: empty; put the token of `midog-eval admin create-runner-token`")
    return token


def gpu_host_command(
    api: str = typer.Option(..., "--api", help="The control host's API, e.g. https://eval.example.org."),
    token_file: Path = typer.Option(..., "--token-file", help="A file (mode 600) holding this host's runner token."),
    broker: str = typer.Option(..., "--broker", help="The control host's broker, e.g. redis://control:6379/0."),
    cache_dir: Path = typer.Option(..., "--cache-dir", help="The content-addressed cache of inputs (and job files)."),
    gpu_class: list[str] = typer.Option(
        [], "--gpu-class", help="A GPU class served (repeatable; default gpu): its queue is gpu or gpu-<class>."
    ),
    queues: str | None = typer.Option(None, "--queues", help="Queues served instead: gpu, gpu-a100 (comma-separated)."),
    cache_gib: float = typer.Option(100.0, "--cache-gib", min=0.001, help="Size cap of the cache in GiB."),
    name: str = typer.Option(socket.gethostname(), "--name", help="This host's name in leases and results."),
    ping_interval_s: float = typer.Option(
        30.0, "--ping-interval-s", min=0.2, help="How often the token is checked while idle (a revoked one stops)."
    ),
    loglevel: str = typer.Option("INFO", help="Celery log level."),
) -> None:
    """Run a GPU host: claim jobs of the given gpu queues through the API, run them, upload their outputs."""
    from app.settings import set_in_environment

    present = set_in_environment(FORBIDDEN_ENV)
    if present:
        _refuse(f"{', '.join(present)} is set; a GPU host holds no database URL or storage key (unset it)")
    try:
        classes = classes_of(gpu_class, queues)
        token = read_token(token_file)
    except ValueError as exc:
        _refuse(str(exc))
    if not api.startswith(("http://", "https://")):
        _refuse(f"--api {api!r}: give the API's URL, e.g. https://eval.example.org")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,60}", name):
        _refuse(f"--name {name!r}: letters, digits, '.', '_', '@' or '-' (at most 61)")

    import threading

    from app.settings import get_settings, use_temporary_directory
    from worker.remote.client import RunnerClient, TokenRefusedError
    from worker.remote.host import HostConfig, host_app, watch_token
    from worker.remote.report import gpu_names, host_report, runnable_kinds
    from worker.time_limits import Limits, LimitsError, check_limits
    from worker.vocabulary import gpu_queue

    settings = get_settings()
    try:
        check_limits(Limits.from_settings(settings))
    except LimitsError as exc:
        _refuse(str(exc))
    client = RunnerClient(api, token, retry_budget_s=0)
    try:
        me = client.ping()
    except TokenRefusedError as exc:
        _refuse(f"the API refused the runner token ({exc})")
    except Exception as exc:
        _refuse(f"the API at {api} cannot be reached: {exc.__class__.__name__}: {exc}")
    private_files()
    cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    work_dir = cache_dir / "jobs"
    work_dir.mkdir(exist_ok=True, mode=0o700)
    use_temporary_directory(cache_dir / "tmp")
    config = HostConfig(
        api=api,
        token=token,
        name=name,
        cache_dir=cache_dir,
        cache_max_bytes=int(cache_gib * GiB),
        work_dir=work_dir,
        settings=settings,
        gpu_classes=classes,
    )
    queue_names = [gpu_queue(c) for c in classes]
    gpus = gpu_names()
    celery = host_app(config, broker_url=broker, queues=queue_names)
    typer.echo(
        f"GPU host {name}: runner token {me['token_id']} ({me['name']}), classes {','.join(classes)} "
        f"(queues {','.join(queue_names)}), GPUs {', '.join(gpus) or 'none (CPU)'}, cache {cache_dir}",
        err=True,
    )
    kinds, problems = runnable_kinds(settings)

    def report() -> dict[str, object]:
        return host_report(
            name=name,
            gpu_classes=classes,
            gpus=gpus,
            cache_dir=cache_dir,
            cache_max_bytes=config.cache_max_bytes,
            kinds=kinds,
            problems=problems,
        )

    beat_file = cache_dir / "heartbeat"
    watch_token(client, interval_s=ping_interval_s, stop=threading.Event(), report=report, beat_file=beat_file)
    argv = celery_worker_argv(
        queues=",".join(queue_names),
        concurrency=1,
        beat=False,
        schedule_file=None,
        loglevel=loglevel,
        name=f"gpu-host-{name}@%h",
    )
    sys.stdout.flush()
    celery.worker_main(argv=argv)
