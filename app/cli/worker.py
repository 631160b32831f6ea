"""`midog-eval worker`: a Celery worker for the `cpu` and/or `gpu` queues (and optionally the reconciler's beat).

The same code path as `celery -A worker.celery_app worker`; the time limits are checked first so that a
misordered configuration stops here with one clear line. Celery and the worker package are imported
inside the command, so `midog-eval --help` stays fast. Must not import FastAPI or torch.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from worker.vocabulary import QUEUES


def private_files() -> None:
    """Files this process creates are its user's only (0600, directories 0700): the database, uploads, logs,
    work files. What the sandbox must read (test-set images, unpacked archives, its run directories) is
    opened up explicitly where it is written."""
    os.umask(0o077)


def celery_worker_argv(
    *,
    queues: str,
    concurrency: int | None,
    beat: bool,
    schedule_file: Path | None,
    loglevel: str,
    name: str | None,
) -> list[str]:
    """Arguments of `celery worker` (after `celery -A worker.celery_app`)."""
    argv = ["worker", "-Q", queues, "--loglevel", loglevel, "--without-gossip", "--without-mingle"]
    if concurrency is not None:
        argv += ["-c", str(concurrency)]
    if name:
        argv += ["-n", name]
    if beat:
        argv += ["-B"]
        if schedule_file is not None:
            argv += ["--schedule", str(schedule_file)]
    return argv


def worker_command(
    queues: str = typer.Option(",".join(QUEUES), help="Comma-separated queues: cpu (predictions files), gpu (models)."),
    concurrency: int | None = typer.Option(
        None, "--concurrency", "-c", help="Processes for cpu-only workers (gpu workers always run one job)."
    ),
    beat: bool = typer.Option(
        False, help="Also run the periodic reconciler (needed once per deployment; repeated runs are harmless)."
    ),
    loglevel: str = typer.Option("INFO", help="Celery log level."),
    name: str | None = typer.Option(None, help="Worker node name (default celery@<host>)."),
    die_with_parent: bool = typer.Option(
        False, "--die-with-parent", help="Exit when the process that started this worker dies (used by serve)."
    ),
) -> None:
    """Run a worker that evaluates submissions from the broker (Redis, or the embedded SQLite broker)."""
    if die_with_parent:
        from worker.process_tree import die_with_parent as arm

        arm()
    from app.settings import get_settings
    from worker.celery_app import app, limits_of
    from worker.time_limits import LimitsError, check_limits

    try:
        check_limits(limits_of(app))
    except LimitsError as exc:
        typer.echo(f"midog-eval worker refuses to start: {exc}", err=True)
        raise typer.Exit(2) from exc
    settings = get_settings()
    private_files()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    argv = celery_worker_argv(
        queues=queues,
        concurrency=concurrency,
        beat=beat,
        schedule_file=settings.data_dir / "celerybeat-schedule",
        loglevel=loglevel,
        name=name,
    )
    sys.stdout.flush()
    app.worker_main(argv=argv)
