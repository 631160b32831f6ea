"""Shared fixtures of the in-process page tests: the seeded challenge (seed.py), committed; tasks sent after
commit recorded, leaderboard rebuilds run inline."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Connection
from sqlalchemy.orm import Session

sys.path.insert(0, str(Path(__file__).parent))

from seed import Seeded, seed

from app.leaderboard.standings import rebuild_phase
from app.queue import task_sender
from worker.vocabulary import REBUILD_STANDINGS


@pytest.fixture
def seeded(db_session: Session) -> Seeded:
    data = seed(db_session)
    db_session.commit()
    return data


@pytest.fixture
def inline_rebuilds(connection: Connection) -> Iterator[list[tuple[str, dict[str, int], str]]]:
    """Tasks sent after commit are recorded; a leaderboard rebuild runs at once on the test transaction, as
    the cpu worker would run it."""
    sent: list[tuple[str, dict[str, int], str]] = []

    def send(name: str, kwargs: dict[str, int], queue: str) -> None:
        sent.append((name, kwargs, queue))
        if name == REBUILD_STANDINGS:
            rebuild_phase(connection, kwargs["phase_id"])

    with task_sender(send):
        yield sent
