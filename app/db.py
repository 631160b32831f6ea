"""Engine and session factory; the request dependency (commits or rolls back) and `session_scope()`.

One transaction per request or per task step: services flush, never commit. Must not import FastAPI,
Celery or torch (the worker and the CLI use this module).

SQLite (the embedded default) has one writer at a time. A transaction that starts as a reader and then
writes fails at once with "database is locked" when another connection wrote meanwhile: the busy timeout
cannot help it. So sessions that will write are made with `write=True`: on SQLite their transactions begin
with BEGIN IMMEDIATE, taking the write lock up front and waiting for it (busy timeout) instead of failing;
readers begin deferred and never wait (WAL). The worker's and the CLI's `session_scope()` write; the API
picks a writing session for every request method but GET, HEAD and OPTIONS.

Importing this module has no side effects: it registers no session listener (a leaderboard is rebuilt by a
queued task that app.lifecycle asks for, never by a hook on commit).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from app.settings import Settings, get_settings


def make_engine(url: str, *, settings: Settings | None = None, **kwargs: Any) -> Engine:
    """An engine for `url`; SQLite gets foreign keys, WAL and a busy timeout, PostgreSQL a connect timeout."""
    settings = settings or get_settings()
    parsed = make_url(url)
    options: dict[str, Any] = {"echo": settings.sql_echo, "pool_pre_ping": True}
    if parsed.get_backend_name() == "sqlite":
        options["connect_args"] = {"check_same_thread": False, "timeout": 30}
    else:
        options["connect_args"] = {"connect_timeout": settings.db_connect_timeout_s}
    if "poolclass" not in kwargs:
        # Sync endpoints and their session dependency run in the 40-thread pool, and a request gives its
        # connection back only when a thread runs the dependency's exit: with fewer connections than
        # threads, threads waiting for a connection can starve the exits that would free one (deadlock
        # until pool_timeout). So the pool can always grow to the thread count.
        options["pool_size"] = settings.db_pool_size
        options["max_overflow"] = max(0, settings.db_max_connections - settings.db_pool_size)
        options["pool_timeout"] = settings.db_connect_timeout_s
    options.update(kwargs)
    engine = create_engine(url, **options)
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
    return engine


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # pysqlite's own transaction handling breaks SAVEPOINT; SQLAlchemy emits BEGIN itself (_sqlite_on_begin).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    # WAL lets the API read while the worker writes; not available for in-memory databases.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    # the default 2 MB page cache makes every leaderboard query re-read the result table from the OS
    cursor.execute("PRAGMA cache_size=-65536")
    cursor.execute("PRAGMA mmap_size=268435456")
    cursor.close()


WRITE_INTENT = "midog_write_intent"


def _sqlite_on_begin(conn: Any) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(WRITE_INTENT) else "BEGIN")


def make_session_factory(engine: Engine, *, write: bool = False) -> sessionmaker[Session]:
    """Sessions that keep loaded attributes after commit (responses are built after the commit).

    `write`: their transactions take SQLite's write lock when they begin (see the module docstring).
    """
    bind = engine.execution_options(**{WRITE_INTENT: True}) if write else engine
    return sessionmaker(bind=bind, expire_on_commit=False)


_engine: Engine | None = None
_session_factory: sessionmaker[Session] | None = None


def get_engine() -> Engine:
    """The process-wide engine, created from settings on first use."""
    global _engine
    if _engine is None:
        _engine = make_engine(get_settings().database_url)
    return _engine


def get_session_factory() -> sessionmaker[Session]:
    """The process-wide session factory (replaceable with `configure_session_factory`)."""
    global _session_factory
    if _session_factory is None:
        _session_factory = make_session_factory(get_engine(), write=True)
    return _session_factory


def configure_session_factory(factory: sessionmaker[Session] | None) -> None:
    """Point the module-level factory elsewhere (tests, CLI with an explicit URL); None resets it."""
    global _session_factory, _engine
    _session_factory = factory
    if factory is None:
        _engine = None


@contextmanager
def session_scope(factory: sessionmaker[Session] | None = None) -> Iterator[Session]:
    """One transaction for the worker or the CLI: commits on success, rolls back on any exception."""
    session = (factory or get_session_factory())()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
