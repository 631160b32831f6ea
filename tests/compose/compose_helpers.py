"""Compose test helpers: Debian's docker-compose (v1, needs no engine for `config`) and the resolved project (importable as
`compose_helpers`: tests/compose is put on sys.path by conftest.py).

In CI (CI=true) a missing docker-compose is a failure: .ci/services.sh installs it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def compose_binary() -> str:
    found = shutil.which("docker-compose")
    if found is None:
        message = "docker-compose is not installed (Debian package docker-compose)"
        if in_ci():
            pytest.fail(message + "; CI requires it (.ci/services.sh installs it)")
        pytest.skip(message)
    return found


def project_copy(root: Path, env_text: str | None = None) -> Path:
    """docker-compose.yml with `.env` from .env.example (as the README says), in a scratch directory."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO_ROOT / "docker-compose.yml", root / "docker-compose.yml")
    (root / ".env").write_text(env_text if env_text is not None else (REPO_ROOT / ".env.example").read_text())
    return root


def compose_config(project: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MIDOG_", "POSTGRES_", "REDIS_"))}
    return subprocess.run(
        [compose_binary(), "config"], cwd=project, env=env, capture_output=True, text=True, timeout=60, check=False
    )
