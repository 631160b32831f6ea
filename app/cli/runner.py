"""`midog-eval sandbox-runner`: the privileged service that runs sandboxes for unprivileged gpu workers
(worker.sandbox.service). Must not import FastAPI or torch.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated

import typer


def sandbox_runner_command(
    socket_path: Annotated[
        Path, typer.Option("--socket", help="The Unix socket the gpu workers connect to (MIDOG_SANDBOX_RUNNER_SOCKET).")
    ] = Path("/run/midog-runner/runner.sock"),
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
    """Run sandboxes for the gpu workers that connect to SOCKET, under the rules of worker.sandbox.service."""
    from app.cli.worker import private_files
    from worker.sandbox.service import RunnerService

    private_files()
    uids = worker_uid or [10001]
    backends = backend or ["bwrap", "podman"]
    service = RunnerService(
        socket_path,
        allowed_roots=allow or [Path("/data"), Path("/test-sets")],
        allowed_uids=uids,
        runtime_dir=runtime_dir,
        backends=backends,
    )
    signal.signal(signal.SIGTERM, lambda *_: service.stop())
    typer.echo(f"sandbox runner on {socket_path} for uids {uids}; backends {', '.join(backends)}", err=True)
    service.serve_forever()
