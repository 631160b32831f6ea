"""The `midog-eval` command: one typer application; each command group lives in its own module here.

Only the module of the command being run is imported (`midog-eval score` loads neither the web service,
the worker nor the participant client's HTTP stack; nor typer itself), and command modules import their heavy
dependencies inside the command functions. `--help` and unknown commands load every module, to list them all.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import typer

HELP = "Self-hostable evaluation server for MIDOG-style mitotic-figure detection challenges."

# command or group name -> (module under app.cli, how it is added to the application)
COMMANDS: dict[str, tuple[str, Callable[[Any, Any], None]]] = {
    "score": ("score_command", lambda cli, m: cli.command("score", **m.SETTINGS)(m.score_command)),
    "dataset": ("dataset", lambda cli, m: cli.add_typer(m.dataset_app, name="dataset")),
    "serve": ("serve", lambda cli, m: cli.command("serve")(m.serve_command)),
    "worker": ("worker", lambda cli, m: cli.command("worker")(m.worker_command)),
    "gpu-host": ("gpu_host", lambda cli, m: cli.command("gpu-host")(m.gpu_host_command)),
    "sandbox-runner": ("runner", lambda cli, m: cli.command("sandbox-runner")(m.sandbox_runner_command)),
    "demo": ("demo", lambda cli, m: cli.add_typer(m.app)),
    "admin": ("admin", lambda cli, m: cli.add_typer(m.admin_app, name="admin")),  # create-token, revoke-token
    "archive": ("archive", lambda cli, m: cli.add_typer(m.app, name="archive")),  # check, pack
}
# The participant client's commands, all in one typer application of app.cli.client.
CLIENT_COMMANDS = (
    "login",
    "register",
    "team",
    "quota",
    "challenges",
    "submit",
    "status",
    "logs",
    "leaderboard",
    "report",
)
for _name in CLIENT_COMMANDS:
    COMMANDS[_name] = ("client", lambda cli, m: cli.add_typer(m.app))


def build_cli(command: str | None = None) -> typer.Typer:
    """The application; with a known `command`, only the module that serves it is imported."""
    import typer

    cli = typer.Typer(
        name="midog-eval", help=HELP, no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False
    )

    @cli.callback()
    def _root() -> None:
        """Self-hostable evaluation server for MIDOG-style mitotic-figure detection challenges."""

    wanted = [COMMANDS[command]] if command in COMMANDS else list(COMMANDS.values())
    added: set[str] = set()
    for module_name, add in wanted:
        if module_name in added:  # the client's commands share one application
            continue
        add(cli, importlib.import_module(f"app.cli.{module_name}"))
        added.add(module_name)
    return cli


def __getattr__(name: str) -> Any:
    """`from app.cli import cli`: the whole application (tests drive it with typer's CliRunner)."""
    if name == "cli":
        return build_cli()
    raise AttributeError(name)


def main() -> None:
    """Console-script entry point. `score` runs without typer (app.cli.score says why)."""
    if sys.argv[1:2] == ["score"]:
        from app.cli.score import main as score_main

        sys.exit(score_main(sys.argv[2:]))
    command = next((arg for arg in sys.argv[1:] if not arg.startswith("-")), None)
    build_cli(command)()
