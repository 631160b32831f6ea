"""`midog-eval serve`: the whole server on one machine: migrations, the API (uvicorn) and the workers.

With no configuration it is the embedded default: SQLite and kombu's server-less SQLite broker under
MIDOG_DATA_DIR (./var). With MIDOG_DATABASE_URL / MIDOG_REDIS_URL (or the conventional DATABASE_URL /
REDIS_URL) it uses PostgreSQL and Redis instead. The workers are `midog-eval worker` subprocesses, i.e.
the production Celery code path, run by a supervisor (app.cli.supervisor) that restarts a dead worker at
once and stops them all with `serve`; they die with `serve` even when it is SIGKILLed. One `serve` per data
directory: a second one refuses to start (an exclusive lock the kernel drops when the holder dies).

Heavy imports (uvicorn, FastAPI, Alembic) happen inside the command. Must not import torch.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import typer

from app.cli.worker import private_files
from worker.vocabulary import BEAT_QUEUE, CPU_QUEUE, QUEUES

_WORKER_ENTRY = "from app.cli import main; main()"


def migrate_database(url: str) -> None:
    """`alembic upgrade head` with the packaged migrations (no alembic.ini needed)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).resolve().parents[2] / "migrations"))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(config, "head")


# Reconciler cadence of the embedded default (production defaults: every 60 s, re-send after 120 s).
def prepare_embedded_broker() -> None:
    """Create the SQLite broker's tables and queues before the API and the workers race to do it."""
    from worker.celery_app import app as celery

    with celery.connection_for_write() as connection:
        channel = connection.default_channel
        for queue in celery.amqp.queues.values():
            queue.bind(channel).declare()


def worker_argv(queues: str, *, beat: bool, name: str) -> list[str]:
    argv = [sys.executable, "-c", _WORKER_ENTRY, "worker", "--queues", queues, "--name", name]
    argv += ["--beat"] if beat else []
    if queues == CPU_QUEUE:
        argv += ["--concurrency", "1"]
    return argv


def hold_data_dir_lock(data_dir: Path) -> int:
    """An exclusive lock on <data_dir>/serve.lock for this process's lifetime; exits when another holds it."""
    import fcntl

    path = data_dir / "serve.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        typer.echo(f"another midog-eval serve (pid {holder}) is running with the data directory {data_dir}", err=True)
        raise typer.Exit(1) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    # uvicorn re-raises the SIGTERM it caught once it has shut down; exiting through SystemExit (instead of
    # the default handler's immediate death) lets the `finally` below stop the workers.
    raise SystemExit(0)


def serve_command(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8000, help="Port to listen on."),
    workers: bool = typer.Option(True, help="Start the cpu and gpu workers (and the reconciler) here."),
    gpu_worker: bool = typer.Option(True, help="Start a gpu-queue worker for model and container submissions."),
    migrate: bool = typer.Option(True, help="Apply database migrations before starting."),
    log_level: str = typer.Option("info", help="uvicorn log level."),
    die_with_parent: bool = typer.Option(
        False, "--die-with-parent", hidden=True, help="Exit when the process that started this one dies (demo)."
    ),
) -> None:
    """Run the evaluation server: API on http://HOST:PORT, workers and the reconciler alongside."""
    if die_with_parent:
        from worker.process_tree import die_with_parent as arm

        arm()
    import uvicorn

    from app.cli.supervisor import Supervisor
    from app.main import create_app
    from app.settings import get_settings

    settings = get_settings()
    private_files()
    for directory in (settings.data_dir, settings.storage_path):
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o700)
    lock = hold_data_dir_lock(settings.data_dir)
    if migrate:
        migrate_database(settings.database_url)
    if settings.broker_url.startswith("sqla+"):
        prepare_embedded_broker()
    log_dir = settings.data_dir / "logs"
    log_dir.mkdir(exist_ok=True)
    supervisor = Supervisor()
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        if workers:
            # The reconciler's beat runs in the cpu worker: always present, and it never runs participant code.
            for queue in QUEUES if gpu_worker else (CPU_QUEUE,):
                argv = worker_argv(queue, beat=queue == BEAT_QUEUE, name=f"{queue}@%h")
                supervisor.add(f"{queue}@%h", [queue], argv, log_dir / f"worker-{queue}.log")
            supervisor.start()
            typer.echo(f"workers started (restarted if they die); logs in {log_dir}", err=True)
        app = create_app(settings)
        app.state.supervisor = supervisor
        # Open event streams must not hold a shutdown up: the workers are stopped right after.
        # proxy_headers off: forwarded headers are believed only from MIDOG_TRUSTED_PROXIES (app.main), never
        # from uvicorn's default of 127.0.0.1.
        uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=2, proxy_headers=False)
    finally:
        supervisor.stop()
        os.close(lock)
