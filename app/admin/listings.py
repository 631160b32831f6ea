"""What the organisers list (test sets, teams, tokens, the audit log) and the lookups their routes start from.
Reads only, apart from revoking a token; never commits."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.auth.service import revoke_token
from app.errors import NotFound
from app.tables import ApiToken, AuditEvent, Phase, Team, TestSet


def registered_test_sets(session: Session) -> list[TestSet]:
    """Every registered test set, oldest first."""
    return list(session.scalars(select(TestSet).order_by(TestSet.id)))


def teams(session: Session, *, limit: int, offset: int) -> list[Team]:
    """One page of teams, oldest first."""
    return list(session.scalars(select(Team).order_by(Team.id).limit(limit).offset(offset)))


def tokens(session: Session, *, limit: int, offset: int) -> list[ApiToken]:
    """One page of API tokens, oldest first (their hashes stay in the rows: the schemas never show them)."""
    return list(session.scalars(select(ApiToken).order_by(ApiToken.id).limit(limit).offset(offset)))


def audit_events(session: Session, *, limit: int, offset: int) -> list[AuditEvent]:
    """One page of the audit log, newest first."""
    return list(session.scalars(select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit).offset(offset)))


def require_phase(session: Session, *, phase_id: int) -> None:
    """404 unless the phase exists (published or not)."""
    if session.get(Phase, phase_id) is None:
        raise NotFound(f"no phase {phase_id}")


def revoke_token_by_id(session: Session, *, token_id: int) -> None:
    """Revoke a token (again: a no-op); 404 for an unknown id."""
    token = session.get(ApiToken, token_id)
    if token is None:
        raise NotFound(f"no token {token_id}")
    revoke_token(session, token=token)
