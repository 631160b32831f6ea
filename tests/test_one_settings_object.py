"""Configuration is read in one place: app/settings.py. Anywhere else in the product (app/, worker/, docker/)
an environment read (os.environ, os.getenv, a CLI option's envvar=) would be a setting that `.env` cannot
reach and that the settings object does not validate."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("app", "worker", "docker")
THE_SETTINGS_MODULE = REPO_ROOT / "app" / "settings.py"


def environment_reads(source: str) -> list[tuple[int, str]]:
    """(line, what) of every environment access in a module's source."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in ("environ", "environb", "getenv", "getenvb"):
            if isinstance(node.value, ast.Name) and node.value.id in ("os", "posix"):
                found.append((node.lineno, f"os.{node.attr}"))
        elif isinstance(node, ast.ImportFrom) and node.module in ("os", "posix"):
            names = {alias.name for alias in node.names}
            found += [(node.lineno, f"from os import {n}") for n in sorted(names & {"environ", "getenv", "environb"})]
        elif isinstance(node, ast.keyword) and node.arg in ("envvar", "auto_envvar_prefix"):
            found.append((node.lineno, f"{node.arg}="))
    return found


def test_the_checker_sees_every_form_of_environment_read() -> None:
    source = (
        "import os\nfrom os import environ, getenv\n"
        "a = os.environ.get('X')\nb = os.getenv('Y')\nc = typer.Option(envvar='Z')\nd = os.environ['W']\n"
    )
    kinds = [what for _line, what in environment_reads(source)]
    assert kinds.count("os.environ") == 2
    assert {"os.getenv", "from os import environ", "from os import getenv", "envvar="} <= set(kinds)
    assert environment_reads("import os\nos.getpid()\nenv = {'environ': 1}\n") == []


@pytest.mark.parametrize("package", PRODUCT)
def test_nothing_but_app_settings_reads_the_environment(package: str) -> None:
    offenders = [
        f"{path.relative_to(REPO_ROOT)}:{line}: {what}"
        for path in sorted((REPO_ROOT / package).rglob("*.py"))
        if path != THE_SETTINGS_MODULE
        for line, what in environment_reads(path.read_text(encoding="utf-8"))
    ]
    assert offenders == [], "read it through app.settings.Settings instead:\n" + "\n".join(offenders)


def test_the_settings_module_does_read_it() -> None:
    assert environment_reads(THE_SETTINGS_MODULE.read_text(encoding="utf-8")), "the checker would be vacuous"
