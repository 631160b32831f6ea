"""`score` on the typer application, for `midog-eval --help` and typer's test runner. The arguments go to
app.cli.score.main untouched, so argparse alone defines and documents them (app.cli.main runs `score` without
typer at all)."""

from __future__ import annotations

from typing import Any

import typer

from app.cli.score import HELP, main

SETTINGS: dict[str, Any] = {
    "help": HELP + " Run `midog-eval score --help` for the options.",
    "add_help_option": False,
    "context_settings": {"allow_extra_args": True, "ignore_unknown_options": True},
}


def score_command(ctx: typer.Context) -> None:
    status = main(list(ctx.args))
    if status:
        raise typer.Exit(status)
