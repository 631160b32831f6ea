"""Compose fixtures: the repository's docker-compose.yml resolved by `docker-compose config`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))

from compose_helpers import compose_config, project_copy


@pytest.fixture(scope="session")
def resolved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`docker-compose config` of the repository's file with .env.example, parsed."""
    result = compose_config(project_copy(tmp_path_factory.mktemp("compose")))
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config
