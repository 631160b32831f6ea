"""The `midog-eval` command: one typer application; each command group lives in its own module here.

Command modules import their heavy dependencies inside the command functions, so that `midog-eval score`
starts without loading the web service or the worker.
"""

import typer

from app.cli import admin, archive, client, dataset, demo, runner, score, serve, worker

cli = typer.Typer(
    name="midog-eval",
    help="Self-hostable evaluation server for MIDOG-style mitotic-figure detection challenges.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@cli.callback()
def _root() -> None:
    """Self-hostable evaluation server for MIDOG-style mitotic-figure detection challenges."""


cli.command("score")(score.score_command)
cli.add_typer(dataset.dataset_app, name="dataset")
cli.command("serve")(serve.serve_command)
cli.command("worker")(worker.worker_command)
cli.command("sandbox-runner")(runner.sandbox_runner_command)
cli.add_typer(client.app)  # login, challenges, submit, status, leaderboard
cli.add_typer(demo.app)  # demo
cli.add_typer(admin.admin_app, name="admin")  # create-token, revoke-token
cli.add_typer(archive.app, name="archive")  # check, pack


def main() -> None:
    """Console-script entry point."""
    cli()
