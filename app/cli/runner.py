"""`midog-eval sandbox-runner`: the privileged service that runs sandboxes for unprivileged gpu workers
(worker.sandbox.runner_daemon). Must not import FastAPI or torch.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated

import typer

DEFAULT_SOCKET = "/run/midog-runner/runner.sock"


def sandbox_runner_command(
    socket_path: Annotated[
        Path, typer.Option("--socket", help="The Unix socket the gpu workers connect to (MIDOG_SANDBOX_RUNNER_SOCKET).")
    ] = Path(DEFAULT_SOCKET),
    allow: Annotated[
        list[Path] | None,
        typer.Option(help="A directory runs may read or write: the data and test-set directories [/data, /test-sets]."),
    ] = None,
    worker_uid: Annotated[
        list[int] | None, typer.Option(help="A uid allowed to use the runner: the gpu worker's [10001].")
    ] = None,
    backend: Annotated[
        list[str] | None, typer.Option(help="A sandbox backend offered: bwrap, podman, docker [bwrap, podman].")
    ] = None,
    runtime_dir: Annotated[Path | None, typer.Option(help="The sandboxes' runtime directory.")] = None,
) -> None:
    """Run sandboxes for the gpu workers that connect to SOCKET, under the rules of worker.sandbox.runner_daemon."""
    from app.cli.worker import private_files
    from app.settings import child_environment, get_settings
    from worker.sandbox.isolation import allowed_missing
    from worker.sandbox.runner_daemon import RunnerService

    settings = get_settings()
    private_files()
    uids = worker_uid or [10001]
    backends = backend or ["bwrap", "podman"]
    service = RunnerService(
        socket_path,
        allowed_roots=allow or [Path("/data"), Path("/test-sets")],
        allowed_uids=uids,
        runtime_dir=runtime_dir or settings.sandbox_runtime_dir,
        backends=backends,
        allowed_missing=allowed_missing(settings.sandbox_allow_missing_controls),
        child_env=child_environment(keep=("PYTHONPATH", "LANG", "CUDA_VISIBLE_DEVICES")),
    )
    signal.signal(signal.SIGTERM, lambda *_: service.stop())
    typer.echo(f"sandbox runner on {socket_path} for uids {uids}; backends {', '.join(backends)}", err=True)
    service.serve_forever()
