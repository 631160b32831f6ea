"""worker.sandbox and worker.containers stay free of the service stack (architecture.md section 3)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

BANNED = ("celery", "sqlalchemy", "fastapi", "torch", "app")


@pytest.mark.parametrize(
    "module", ["worker.sandbox", "worker.containers.archive", "worker.containers.contract", "worker.containers.runner"]
)
def test_no_service_stack_imports(module: str) -> None:
    code = f"import importlib, json, sys; importlib.import_module({module!r}); print(json.dumps(sorted(sys.modules)))"
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert module in loaded
    assert [m for m in loaded if m.split(".")[0] in BANNED] == []


def test_archive_validation_is_stdlib_only() -> None:
    """The API imports the validator at upload: it must not even pull in numpy."""
    code = "import json, sys; import worker.containers.archive; print(json.dumps(sorted(sys.modules)))"
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert "numpy" not in loaded
    assert "worker.evaluation" not in loaded
