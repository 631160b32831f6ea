"""`midog-eval gpu-host`: a GPU host that needs only the API's address, a runner token and the broker.

    midog-eval gpu-host --api https://eval.example.org --token-file /etc/midog/runner-token \
        --broker redis://control:6379/0 --cache-dir /var/cache/midog [--queues gpu,gpu-a100]

It runs a Celery worker on the given gpu queues (one job at a time, a fresh process per job) whose tasks talk
only to the API (worker.remote.host). It refuses to start with a database URL in its environment, with a
token file others can read, or when the API refuses the token. Celery and the worker are imported inside the
command. Must not import FastAPI, SQLAlchemy or torch.
"""

from __future__ import annotations

import re
import socket
import stat
import sys
from pathlib import Path

import typer

from app.cli.worker import celery_worker_argv, private_files
from worker.vocabulary import GPU_QUEUE

# Environment variables a GPU host must not hold: the database (and the object store's key pair).
FORBIDDEN_ENV = ("MIDOG_DATABASE_URL", "DATABASE_URL", "MIDOG_S3_SECRET_KEY")
_QUEUE = re.compile(r"gpu(-[a-z0-9]+)*")
GiB = 1024**3


def _refuse(message: str) -> None:
    typer.echo(f"midog-eval gpu-host refuses to start: {message}", err=True)
    raise typer.Exit(2)


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
    queues: str = typer.Option(GPU_QUEUE, "--queues", help="GPU classes served: gpu, gpu-a100, ... (comma-separated)."),
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
        queue_names = parse_queues(queues)
        token = read_token(token_file)
    except ValueError as exc:
        _refuse(str(exc))
    if not api.startswith(("http://", "https://")):
        _refuse(f"--api {api!r}: give the API's URL, e.g. https://eval.example.org")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,60}", name):
        _refuse(f"--name {name!r}: letters, digits, '.', '_', '@' or '-' (at most 61)")

    import threading

    from app.settings import get_settings
    from worker.remote.client import RunnerClient, TokenRefusedError
    from worker.remote.host import HostConfig, host_app, watch_token
    from worker.time_limits import Limits, LimitsError, check_limits

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
    config = HostConfig(
        api=api,
        token=token,
        name=name,
        cache_dir=cache_dir,
        cache_max_bytes=int(cache_gib * GiB),
        work_dir=work_dir,
        settings=settings,
    )
    celery = host_app(config, broker_url=broker, queues=queue_names)
    typer.echo(
        f"GPU host {name}: runner token {me['token_id']} ({me['name']}), queues {','.join(queue_names)}, "
        f"cache {cache_dir}",
        err=True,
    )
    watch_token(client, interval_s=ping_interval_s, stop=threading.Event())
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
