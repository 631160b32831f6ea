"""Shared database fixtures: a real PostgreSQL and SQLite, both built by the real migrations.

- `postgres_server_url`: an administrative URL of a reachable PostgreSQL (MIDOG_TEST_DATABASE_URL, else the
  local server). Unreachable: a skip on a developer machine, a FAILURE in CI (env CI=true).
- `create_database(backend)`: a fresh, empty database (unique name, dropped at the end of the session).
- `alembic_cfg(url)`: this repository's Alembic Config for a URL; `migrate(url)` upgrades to head.
- `database_url`: a migrated database, parametrised over `postgresql` and `sqlite` (one per session each).
- `engine`, `connection` (one transaction rolled back per test), `db_session`, `session_factory` (sessions
  that join the test transaction through savepoints, so code under test may commit freely).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

BACKENDS = ("postgresql", "sqlite")
DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
REPO_ROOT = Path(__file__).resolve().parents[1]


def postgres_admin_url() -> str:
    return os.environ.get("MIDOG_TEST_DATABASE_URL") or DEFAULT_POSTGRES_URL


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    """An administrative URL of a reachable PostgreSQL server."""
    url = postgres_admin_url()
    engine = create_engine(url, connect_args={"connect_timeout": 3}, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        message = f"PostgreSQL at {make_url(url).render_as_string(hide_password=True)} is unreachable: {exc}"
        if _in_ci():
            pytest.fail(message + " (CI requires it; .ci/services.sh starts it)")
        pytest.skip(message)
    finally:
        engine.dispose()
    return url


def alembic_config(url: str) -> Config:
    """An Alembic Config for this repository pointed at `url`."""
    cfg = Config(str(REPO_ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(REPO_ROOT / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def migrate(url: str, revision: str = "head") -> None:
    """`alembic upgrade <revision>` on `url`."""
    command.upgrade(alembic_config(url), revision)


@pytest.fixture(scope="session")
def alembic_cfg() -> Callable[[str], Config]:
    """A factory: database URL -> Alembic Config of this repository (for migration tests)."""
    return alembic_config


@pytest.fixture(scope="session")
def create_database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[str], str]]:
    """A factory: backend name -> URL of a new, empty database, dropped when the session ends."""
    created: list[tuple[str, str]] = []

    def create(backend: str) -> str:
        if backend == "sqlite":
            path = tmp_path_factory.mktemp("sqlite") / f"midog-{uuid.uuid4().hex[:8]}.sqlite3"
            return f"sqlite:///{path}"
        if backend != "postgresql":
            raise ValueError(backend)
        server = request.getfixturevalue("postgres_server_url")
        name = f"midog_test_{uuid.uuid4().hex[:12]}"
        admin = create_engine(server, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        created.append((server, name))
        return make_url(server).set(database=name).render_as_string(hide_password=False)

    yield create
    for server, name in created:
        admin = create_engine(server, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session", params=BACKENDS)
def database_url(request: pytest.FixtureRequest, create_database: Callable[[str], str]) -> str:
    """A database with every migration applied, once per backend per session."""
    url = create_database(request.param)
    migrate(url)
    return url


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    from app.db import make_engine

    eng = make_engine(database_url)
    yield eng
    eng.dispose()


@pytest.fixture
def backend(engine: Engine) -> str:
    """'postgresql' or 'sqlite': the backend the current test runs on."""
    return engine.dialect.name


@pytest.fixture
def connection(engine: Engine) -> Iterator[Connection]:
    """One connection inside one transaction, rolled back after the test."""
    conn = engine.connect()
    trans = conn.begin()
    try:
        yield conn
    finally:
        if trans.is_active:
            trans.rollback()
        conn.close()


@pytest.fixture
def session_factory(connection: Connection) -> sessionmaker[Session]:
    """Sessions bound to the test transaction; their commits only release savepoints."""
    return sessionmaker(bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False)


@pytest.fixture
def db_session(session_factory: sessionmaker[Session]) -> Iterator[Session]:
    session = session_factory()
    try:
        yield session
    finally:
        session.close()
