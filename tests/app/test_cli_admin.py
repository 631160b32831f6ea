"""`midog-eval admin create-token` and `create-runner-token`: print the token once, store its hash, and the
token works (a runner token as a runner only, its creation and revocation in the audit log)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from app.auth.service import authenticate, hash_token
from app.tables import ApiToken, TokenScope


def _cli(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    code = "from app.cli import main; main()"
    env = {**os.environ, "MIDOG_DATABASE_URL": url}
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )


def test_create_token_prints_it_once_and_stores_the_hash(
    create_database: Callable[[str], str], alembic_cfg: Callable[[str], Config]
) -> None:
    url = create_database("sqlite")
    command.upgrade(alembic_cfg(url), "head")
    done = _cli("admin", "create-token", "--name", "ops", url=url)
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    assert token.startswith("mdg_")
    assert "shown only this once" in done.stderr
    engine = create_engine(url)
    with Session(engine) as db:
        row = db.scalars(select(ApiToken)).one()
        assert row.token_hash == hash_token(token)
        assert row.scope is TokenScope.ORGANISER
        assert authenticate(db, token=token).is_organiser
    revoked = _cli("admin", "revoke-token", str(row.id), url=url)
    assert revoked.returncode == 0, revoked.stderr
    with Session(engine) as db:
        assert db.scalars(select(ApiToken)).one().revoked_at is not None
    engine.dispose()


def test_create_token_without_a_schema_fails_with_one_line(create_database: Callable[[str], str]) -> None:
    done = _cli("admin", "create-token", url=create_database("sqlite"))
    assert done.returncode == 1
    assert done.stderr.startswith("error: could not create the token")
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


def test_create_runner_token_is_a_runner_scope_recorded_in_the_audit_log(
    create_database: Callable[[str], str], alembic_cfg: Callable[[str], Config]
) -> None:
    from app.tables import AuditEvent

    url = create_database("sqlite")
    command.upgrade(alembic_cfg(url), "head")
    done = _cli("admin", "create-runner-token", "gpu-a100-1", url=url)
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    assert token.startswith("mdg_")
    assert "revoke-token" in done.stderr
    engine = create_engine(url)
    with Session(engine) as db:
        row = db.scalars(select(ApiToken)).one()
        assert row.scope is TokenScope.RUNNER
        assert row.name == "gpu-a100-1"
        assert row.token_hash == hash_token(token)
        principal = authenticate(db, token=token)
        assert not principal.is_organiser
        assert principal.team is None
        event = db.scalars(select(AuditEvent)).one()
        assert (event.action, event.target_id) == ("create_runner_token", row.id)
        assert token not in str(event.details)
    assert _cli("admin", "revoke-token", str(row.id), url=url).returncode == 0
    with Session(engine) as db:
        actions = [e.action for e in db.scalars(select(AuditEvent).order_by(AuditEvent.id))]
        assert actions == ["create_runner_token", "revoke_token"]
    engine.dispose()
    empty = _cli("admin", "create-runner-token", " ", url=url)
    assert empty.returncode == 2
    assert "NAME" in empty.stderr
