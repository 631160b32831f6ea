"""The organisers' audit log: a router dependency that records every successful write of the organiser API.

After the endpoint returned (and before the request's transaction commits, so the change and its record
commit together) it adds one AuditEvent: which token (id, prefix and name), the route's name as the action
(e.g. `update_phase`), the path as the target with its first id, and the fields given in the JSON body.
Values under keys that hold secrets are replaced by "***". An endpoint may set `request.state.audit` to a
dict of details of its own (uploads, whose body is a file). Failed requests record nothing: they change
nothing. Must not import the routers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from fastapi import Request
from sqlalchemy.orm import Session

from app.auth.service import Principal
from app.deps import READ_ONLY_METHODS
from app.tables import AuditEvent

SECRET_KEYS = frozenset({"password", "token", "secret", "invitation"})
MAX_DETAIL_CHARS = 4000


def _redacted(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: "***" if k.lower() in SECRET_KEYS else _redacted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted(v) for v in value]
    return value


def _body_fields(request: Request) -> dict[str, Any]:
    # FastAPI has read and cached the JSON body on this request object before the endpoint ran.
    raw = getattr(request, "_body", None)
    if not raw:
        return {}
    try:
        parsed = json.loads(raw)
    except ValueError:
        return {}
    details = _redacted(parsed) if isinstance(parsed, dict) else {"body": _redacted(parsed)}
    text = json.dumps(details)
    return details if len(text) <= MAX_DETAIL_CHARS else {"truncated": text[:MAX_DETAIL_CHARS]}


def record_admin_writes(request: Request, db: Session, principal: Principal) -> Iterator[None]:
    """Yield to the endpoint; afterwards, for a write that succeeded, add its AuditEvent to the transaction."""
    yield
    if request.method in READ_ONLY_METHODS:
        return
    route = request.scope.get("route")
    ids = [int(v) for v in request.path_params.values() if str(v).isdigit()]
    details = getattr(request.state, "audit", None) or _body_fields(request)
    if request.url.query:
        details = {**details, "query": request.url.query}
    token = principal.token
    db.add(
        AuditEvent(
            token_id=token.id,
            actor=f"{token.prefix} {token.name}".strip()[:200],
            action=str(getattr(route, "name", request.method))[:100],
            target=f"{request.method} {request.url.path}"[:200],
            target_id=ids[0] if ids else None,
            details=details,
        )
    )
    db.flush()
