"""`midog-eval serve`: the whole server on one machine: migrations, the API (uvicorn) and the workers.

With no configuration it is the embedded default: SQLite and kombu's server-less SQLite broker under
MIDOG_DATA_DIR (./var). With MIDOG_DATABASE_URL / MIDOG_REDIS_URL (or the conventional DATABASE_URL /
REDIS_URL) it uses PostgreSQL and Redis instead. The workers are `midog-eval worker` subprocesses, i.e.
the production Celery code path, started before the API and stopped with it.

Heavy imports (uvicorn, FastAPI, Alembic) happen inside the command. Must not import torch.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import typer

from app.cli.worker import adopt_standard_environment

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
EMBEDDED_RECONCILER = {"MIDOG_RECONCILE_INTERVAL_S": "5", "MIDOG_REQUEUE_AFTER_S": "10"}


def prepare_embedded_broker() -> None:
    """Create the SQLite broker's tables and queues before the API and the workers race to do it."""
    from worker.celery_app import app as celery

    with celery.connection_for_write() as connection:
        channel = connection.default_channel
        for queue in celery.amqp.queues.values():
            queue.bind(channel).declare()


def _start_worker(queues: str, *, beat: bool, name: str, log_dir: Path) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-c", _WORKER_ENTRY, "worker", "--queues", queues, "--name", name]
    argv += ["--beat"] if beat else []
    if queues == "cpu":
        argv += ["--concurrency", "1"]
    log = open(log_dir / f"worker-{queues}.log", "ab")  # noqa: SIM115 (kept open for the child's lifetime)
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass


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
) -> None:
    """Run the evaluation server: API on http://HOST:PORT, workers and the reconciler alongside."""
    adopt_standard_environment()
    import uvicorn

    from app.main import create_app
    from app.settings import get_settings

    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    settings.storage_path.mkdir(parents=True, exist_ok=True)
    if migrate:
        migrate_database(settings.database_url)
    if settings.broker_url.startswith("sqla+"):
        # One machine, no services: a lost wake-up is re-sent within seconds rather than minutes.
        for name, value in EMBEDDED_RECONCILER.items():
            os.environ.setdefault(name, value)
        prepare_embedded_broker()
    log_dir = settings.data_dir / "logs"
    log_dir.mkdir(exist_ok=True)
    started: list[subprocess.Popen[bytes]] = []
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        if workers:
            # The reconciler's beat runs in the cpu worker: always present, and it never runs participant code.
            started.append(_start_worker("cpu", beat=True, name="cpu@%h", log_dir=log_dir))
            if gpu_worker:
                started.append(_start_worker("gpu", beat=False, name="gpu@%h", log_dir=log_dir))
            typer.echo(f"workers started; logs in {log_dir}", err=True)
        uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level)
    finally:
        for process in started:
            _stop(process)
