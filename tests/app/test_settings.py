"""Settings: MIDOG_ environment prefix and .env, embedded defaults under the data dir, broker derivation, and the
workers reading the same object."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_embedded_defaults_live_under_the_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MIDOG_DATABASE_URL", "MIDOG_BROKER_URL", "MIDOG_REDIS_URL", "MIDOG_STORAGE_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MIDOG_DATA_DIR", str(tmp_path))
    s = Settings()
    assert s.database_url == f"sqlite:///{tmp_path.resolve() / 'midog-eval.sqlite3'}"
    assert s.broker_url.startswith("sqla+sqlite:///")
    assert s.storage_path == tmp_path / "storage"


def test_redis_url_becomes_the_broker_unless_one_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MIDOG_BROKER_URL", raising=False)
    monkeypatch.setenv("MIDOG_REDIS_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("MIDOG_DATABASE_URL", "postgresql+psycopg://u@h/db")
    s = Settings()
    assert s.broker_url == "redis://127.0.0.1:6379/0"
    assert s.database_url == "postgresql+psycopg://u@h/db"
    monkeypatch.setenv("MIDOG_BROKER_URL", "redis://other:6379/1")
    assert Settings().broker_url == "redis://other:6379/1"


def test_invalid_values_are_refused_at_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIDOG_MAX_PREDICTIONS_BYTES", "-1")
    with pytest.raises(ValueError, match="max_predictions_bytes"):
        Settings()


def test_conventional_urls_are_honoured_below_the_midog_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MIDOG_DATABASE_URL", "MIDOG_REDIS_URL", "MIDOG_BROKER_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@h/db")  # as a platform sets it
    monkeypatch.setenv("REDIS_URL", "redis://r:6379/0")
    s = Settings()
    assert s.database_url == "postgresql+psycopg://u@h/db"  # psycopg 3, which this project ships
    assert s.broker_url == "redis://r:6379/0"
    monkeypatch.setenv("MIDOG_DATABASE_URL", "sqlite:////srv/x.sqlite3")
    assert Settings().database_url == "sqlite:////srv/x.sqlite3"


def test_the_reconciler_is_quick_on_the_embedded_broker_unless_told_otherwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("MIDOG_BROKER_URL", "MIDOG_REDIS_URL", "REDIS_URL", "MIDOG_RECONCILE_INTERVAL_S"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MIDOG_DATA_DIR", str(tmp_path))
    embedded = Settings()
    assert (embedded.reconcile_interval_s, embedded.requeue_after_s) == (5.0, 10.0)
    monkeypatch.setenv("MIDOG_REDIS_URL", "redis://r:6379/0")
    production = Settings()
    assert (production.reconcile_interval_s, production.requeue_after_s) == (60.0, 120.0)
    monkeypatch.setenv("MIDOG_RECONCILE_INTERVAL_S", "30")
    assert Settings().reconcile_interval_s == 30.0


WORKER_VIEW = """
import json
from app.settings import get_settings
from worker.celery_app import app, key_prefix, limits_of
from worker.containers.runner import ContainerSettings
from worker.model_runner import ModelSettings
from worker.runners import load_runner
settings = get_settings()
print(json.dumps({
    "prefix": key_prefix(),
    "transport": app.conf.broker_transport_options.get("global_keyprefix"),
    "soft": limits_of(app).soft_time_limit_s,
    "attempts": limits_of(app).max_attempts,
    "runner": type(load_runner("model")).__name__,
    "model_memory": ModelSettings.from_settings(settings).memory_bytes,
    "model_backend": ModelSettings.from_settings(settings).backend,
    "container_layout": ContainerSettings.from_settings(settings).layout,
    "allowed_missing": sorted(ModelSettings.from_settings(settings).allowed_missing),
}))
"""


def test_a_dot_env_file_configures_the_workers_as_it_configures_the_api(tmp_path: Path) -> None:
    """Every setting the workers use (broker key prefix, time limits, runner choice, sandbox and container
    settings) comes from the same object, so a value in .env reaches them; none is read from os.environ."""
    (tmp_path / ".env").write_text(
        "MIDOG_REDIS_URL=redis://127.0.0.1:6379/15\n"
        "MIDOG_REDIS_KEY_PREFIX=from-dotenv:\n"
        "MIDOG_SOFT_TIME_LIMIT_S=1950\n"
        "MIDOG_MAX_ATTEMPTS=5\n"
        "MIDOG_RUNNER_MODEL=worker.runners:ReplayRunner\n"
        "MIDOG_MODEL_MEMORY_BYTES=1073741824\n"
        "MIDOG_SANDBOX_BACKEND=podman\n"
        "MIDOG_CONTAINER_LAYOUT=2021\n"
        "MIDOG_SANDBOX_ALLOW_MISSING_CONTROLS=pids\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIDOG_") and k not in ("REDIS_URL", "DATABASE_URL")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    out = subprocess.run(
        [sys.executable, "-c", WORKER_VIEW], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == {
        "prefix": "from-dotenv:",
        "transport": "from-dotenv:",
        "soft": 1950.0,
        "attempts": 5,
        "runner": "ReplayRunner",
        "model_memory": 1073741824,
        "model_backend": "podman",
        "container_layout": "2021",
        "allowed_missing": ["pids"],
    }


def test_a_wrong_setting_names_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIDOG_CONTAINER_LAYOUT", "2019")
    with pytest.raises(ValueError, match="container_layout"):
        Settings()
    monkeypatch.delenv("MIDOG_CONTAINER_LAYOUT")
    monkeypatch.setenv("MIDOG_MODEL_GPU", "all")
    with pytest.raises(ValueError, match="model_gpu"):
        Settings()
