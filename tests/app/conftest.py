"""API fixtures: an app bound to the test transaction (both backends), a recording task sender, a synthetic
test set on disk, an organiser token, and typed helpers that register teams, submit and finish evaluations."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher

sys.path.insert(0, str(Path(__file__).parent))  # the test modules here import api_helpers too

from api_helpers import CASES, World, write_test_set
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Connection
from sqlalchemy.orm import Session, sessionmaker

from app.auth.service import create_token, set_password_hasher
from app.challenges.service import scoring_fingerprint_of
from app.leaderboard.standings import rebuild_phase
from app.main import create_app
from app.queue import task_sender
from app.settings import Settings
from app.tables import Challenge, Phase, TestSet, TokenScope, utcnow
from worker.datasets.manifest import scoring_digest
from worker.vocabulary import REBUILD_STANDINGS


@pytest.fixture(autouse=True, scope="session")
def _cheap_password_hashing() -> Iterator[None]:
    """argon2 with its production cost takes ~0.3 s a hash; the tests need correctness, not cost."""
    previous = set_password_hasher(PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    yield
    set_password_hasher(previous)


@pytest.fixture
def sent_tasks(connection: Connection) -> Iterator[list[tuple[str, dict[str, int], str]]]:
    """Every task the code under test sends (after commit), instead of a broker. A leaderboard rebuild is also
    run at once on the test transaction, as the cpu worker would run it (the worker's task body)."""
    sent: list[tuple[str, dict[str, int], str]] = []

    def send(name: str, kwargs: dict[str, int], queue: str) -> None:
        sent.append((name, kwargs, queue))
        if name == REBUILD_STANDINGS:
            rebuild_phase(connection, kwargs["phase_id"])

    with task_sender(send):
        yield sent


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        sse_poll_interval_s=0.02,
        sse_max_duration_s=2.0,
        robustness_resamples=200,
        # Every test client comes from one address; throttling has tests of its own (test_throttle.py).
        login_rate_per_address="10000/minute",
        registration_rate_per_address="10000/minute",
    )


@pytest.fixture
def app(settings: Settings, session_factory: sessionmaker[Session], sent_tasks: list[Any]) -> FastAPI:
    return create_app(settings, session_factory=session_factory)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


@pytest.fixture
def make_world(db_session: Session, client: TestClient, tmp_path: Path) -> Callable[..., World]:
    def make(**phase_fields: Any) -> World:
        root = write_test_set(tmp_path / "testset")
        test_set = TestSet(
            name="synthetic",
            manifest_path=str(root / "manifest.json"),
            manifest_sha256="0" * 64,
            scoring_digest=scoring_digest(root),
            case_count=len(CASES),
            cases={
                c["name"]: {
                    "width": c["width"],
                    "height": c["height"],
                    "spacing_mm": c["spacing_mm"],
                    "groups": {"scanner": c["scanner"]},
                }
                for c in CASES
            },
        )
        challenge = Challenge(slug="midog", title="MIDOG test")
        fields: dict[str, Any] = {"opens_at": utcnow() - timedelta(days=1), "closes_at": utcnow() + timedelta(days=30)}
        fields.update(phase_fields)
        phase = Phase(challenge=challenge, slug="prelim", title="Preliminary", test_set=test_set, **fields)
        db_session.add_all([test_set, challenge, phase])
        db_session.flush()
        phase.scoring_fingerprint = scoring_fingerprint_of(db_session, phase)
        issued = create_token(db_session, scope=TokenScope.ORGANISER, name="tests")
        db_session.commit()
        return World(db_session, client, issued.token, challenge, phase, test_set)

    return make


@pytest.fixture
def world(make_world: Callable[..., World]) -> World:
    return make_world()
