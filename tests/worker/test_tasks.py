"""Task helpers: which database errors are retried, and how long a step waits for the database."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from app.db import configure_session_factory
from worker.errors import RetryableError
from worker.tasks import is_transient, queue_for, with_db_retry


def test_a_lost_database_is_transient_and_a_constraint_violation_is_not() -> None:
    assert is_transient(OperationalError("SELECT 1", {}, Exception("connection refused")))
    assert not is_transient(IntegrityError("INSERT", {}, Exception("duplicate key")))
    invalidated = DBAPIError("SELECT 1", {}, Exception("reset"), connection_invalidated=True)
    assert is_transient(invalidated)


def test_predictions_files_go_to_cpu_workers_and_participant_code_to_gpu_workers() -> None:
    assert queue_for("predictions") == "cpu"
    assert queue_for("model") == "gpu"
    assert queue_for("container") == "gpu"


@pytest.fixture
def unreachable_database() -> Iterator[None]:
    engine = create_engine("postgresql+psycopg://postgres@127.0.0.1:1/none", connect_args={"connect_timeout": 1})
    configure_session_factory(sessionmaker(bind=engine))
    try:
        yield
    finally:
        configure_session_factory(None)
        engine.dispose()


def test_a_step_retries_while_the_database_is_down_then_hands_over_as_retryable(unreachable_database: None) -> None:
    calls = 0

    def step(session: Session) -> Any:
        nonlocal calls
        calls += 1
        return session.execute(text("SELECT 1")).scalar()

    started = time.monotonic()
    with pytest.raises(RetryableError, match="database unavailable"):
        with_db_retry(step, budget_s=1.0)
    assert calls >= 3  # 0.2 s, 0.4 s ... back-off inside the budget
    assert time.monotonic() - started < 3


def test_a_bug_in_a_step_is_not_retried(unreachable_database: None) -> None:
    calls = 0

    def step(_session: Session) -> None:
        nonlocal calls
        calls += 1
        raise IntegrityError("INSERT", {}, Exception("duplicate key"))

    with pytest.raises(IntegrityError):
        with_db_retry(step, budget_s=5.0)
    assert calls == 1
