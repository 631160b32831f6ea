"""`midog-eval <command>` imports only the module of that command: `score` starts without typer, pydantic, scipy,
the HTTP client, the settings object, the web service or the worker."""

from __future__ import annotations

import json
import subprocess
import sys

from app.cli import CLIENT_COMMANDS, COMMANDS


def _loaded(argv: list[str]) -> set[str]:
    code = (
        "import json, sys\n"
        f"sys.argv = {['midog-eval', *argv]!r}\n"
        "from app.cli import build_cli, main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print(json.dumps(sorted(sys.modules)), file=sys.stderr)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(json.loads(out.stderr.strip().splitlines()[-1]))


def test_score_loads_no_client_service_or_worker_stack() -> None:
    loaded = _loaded(["score", "--help"])
    assert "app.cli.score" in loaded
    for heavy in (
        "httpx",
        "app.settings",
        "sqlalchemy",
        "fastapi",
        "celery",
        "app.cli.client",
        "typer",
        "pydantic",
        "scipy",
    ):
        assert heavy not in loaded, heavy


def test_help_lists_every_command_and_the_client_names_match_its_application() -> None:
    from app.cli import client

    registered = {command.name or command.callback.__name__ for command in client.app.registered_commands}
    registered |= {group.name for group in client.app.registered_groups if group.name}  # `team invite|join|show`
    assert registered == set(CLIENT_COMMANDS)
    listing = subprocess.run(
        [sys.executable, "-c", "from app.cli import main; main()", "--help"], capture_output=True, text=True
    ).stdout
    for name in COMMANDS:
        assert name in listing, name
