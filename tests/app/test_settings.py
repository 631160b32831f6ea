"""Settings: MIDOG_ environment prefix, embedded defaults under the data dir, broker derivation."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.settings import Settings


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
