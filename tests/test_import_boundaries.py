"""The dependency rules of docs/architecture.md (Dependency rules), checked in fresh interpreters via sys.modules."""

import json
import subprocess
import sys

import pytest

# module -> top-level packages (or dotted prefixes) it must never pull in, directly or indirectly.
RULES: dict[str, tuple[str, ...]] = {
    "worker.evaluation": (
        "app",
        "worker.tasks",
        "worker.pipeline",
        "worker.sandbox",
        "worker.inference",
        "worker.datasets",
        "celery",
        "sqlalchemy",
        "fastapi",
        "pydantic",
        "torch",
    ),
    "worker.inference": ("app", "celery", "sqlalchemy", "fastapi"),
    "worker.inference.run": ("app", "celery", "sqlalchemy", "fastapi"),
    "worker.archives": ("torch", "app", "celery", "sqlalchemy", "fastapi"),
    "worker.containers": ("torch", "app", "celery", "sqlalchemy", "fastapi"),
    "worker.containers.runner": ("torch", "app", "celery", "sqlalchemy", "fastapi"),
    "worker.containers.contract": ("torch", "app", "celery", "sqlalchemy", "fastapi"),
    # The API validates image archives at upload: the validator must not even pull in numpy.
    "worker.containers.image_archive": (
        "numpy",
        "worker.evaluation",
        "torch",
        "app",
        "celery",
        "sqlalchemy",
        "fastapi",
    ),
    "worker.datasets": ("torch", "app", "celery", "sqlalchemy", "fastapi", "worker.inference"),
    "worker.runners": ("torch", "celery", "sqlalchemy", "fastapi"),
    "worker.celery_app": ("torch", "fastapi", "worker.inference"),
    "worker.tasks": ("torch", "fastapi", "worker.inference"),
    "worker.pipeline": ("celery", "sqlalchemy", "fastapi", "torch"),
    "worker.sandbox": ("app", "celery", "sqlalchemy", "fastapi", "torch"),
    # Run as root inside each sandbox run's mount namespace: the standard library and worker.sandbox only.
    "worker.sandbox.mountns": ("app", "celery", "sqlalchemy", "fastapi", "torch", "numpy", "pydantic"),
    # The time limits and their defaults, read by app.settings: the standard library only.
    "worker.time_limits": ("app", "celery", "sqlalchemy", "fastapi", "pydantic", "torch", "numpy"),
    # The metric fields of a result, read by app.tables, the API and the worker: the standard library only.
    "worker.result_fields": ("app", "celery", "sqlalchemy", "fastapi", "pydantic", "torch", "numpy"),
    "worker.safe_delete": ("app", "celery", "sqlalchemy", "fastapi", "torch", "numpy", "pydantic", "worker.sandbox"),
    "app.tables": ("fastapi", "torch", "worker.tasks", "worker.inference"),
    "app.db": ("fastapi", "torch", "worker.tasks", "worker.inference"),
    "app.settings": ("fastapi", "torch", "worker.tasks", "worker.inference"),
    "app.main": ("worker.tasks", "worker.inference", "worker.celery_app", "torch"),
    "app.queue": ("worker.tasks", "worker.inference", "torch"),
    "app.cli": ("torch", "fastapi", "sqlalchemy", "celery"),
    # The API and the workers compute scoring fingerprints with the same code.
    "app.scoring": ("fastapi", "sqlalchemy", "celery", "torch", "numpy"),
    "worker.provenance": ("fastapi", "sqlalchemy", "celery", "torch"),
    # Object storage, used by the API, the scoring workers and the CLI: the standard library (boto3 only in .s3).
    "worker.objects": ("app", "celery", "sqlalchemy", "fastapi", "pydantic", "torch", "numpy", "boto3", "botocore"),
    "worker.objects.local": ("app", "celery", "sqlalchemy", "fastapi", "pydantic", "torch", "numpy", "boto3"),
    "worker.objects.s3": ("app", "celery", "sqlalchemy", "fastapi", "pydantic", "torch", "numpy"),
    "worker.objects.configured": ("app", "celery", "sqlalchemy", "fastapi", "pydantic", "torch", "numpy"),
    "app.object_store": ("fastapi", "sqlalchemy", "celery", "torch", "boto3"),
    # Runs on GPU hosts, which hold neither the database nor the control host's settings: the standard library.
    "worker.blob_cache": ("app", "celery", "sqlalchemy", "fastapi", "pydantic", "torch", "numpy", "boto3"),
    # A GPU host's side of the job protocol holds no database: neither its client nor its worker may pull one in.
    "worker.remote.client": ("app", "celery", "sqlalchemy", "fastapi", "torch", "boto3"),
    "worker.remote.report": ("app", "celery", "sqlalchemy", "fastapi", "torch", "boto3"),
    # (The SQLAlchemy library itself comes in with worker.celery_app's import of kombu's embedded-broker
    # transport; nothing that opens a database, app.db, app.tables or worker.tasks, may.)
    "worker.remote.host": ("app.db", "app.tables", "worker.tasks", "worker.heartbeat", "fastapi", "torch", "boto3"),
    "app.runner.service": ("fastapi", "torch", "worker.tasks", "worker.celery_app"),
    # The API registers test sets with it and a GPU host may read its keys: no numpy, no boto3.
    "worker.datasets.content": ("app", "celery", "sqlalchemy", "fastapi", "pydantic", "torch", "numpy", "boto3"),
}


def _loaded_modules(module: str) -> set[str]:
    code = f"import json, sys, importlib; importlib.import_module({module!r}); print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout))


@pytest.mark.parametrize("module", sorted(RULES))
def test_module_respects_its_dependency_rule(module: str) -> None:
    loaded = _loaded_modules(module)
    forbidden = [name for name in loaded for banned in RULES[module] if name == banned or name.startswith(banned + ".")]
    assert not forbidden, f"importing {module} pulls in {sorted(forbidden)}"


def test_the_rule_checker_detects_a_violation() -> None:
    """Guards the test itself: json imports codecs-based modules, so a rule banning 'json' must trip."""
    assert "json" in _loaded_modules("json")
