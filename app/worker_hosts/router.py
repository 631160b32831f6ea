"""GET /api/v1/health: the server's verdict on itself and its workers (HTTP only)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from app.worker_hosts import service
from app.worker_hosts.schemas import Health

router = APIRouter(prefix="/api/v1", tags=["health"])


@router.get(
    "/health",
    summary="Health: status ok or degraded, each worker alive or not",
    description=(
        "Always 200 while the API itself answers. `status` is `degraded` while a worker is down (not heard of "
        "within the staleness window, or dead and being restarted by `serve`) or the database is unreachable."
    ),
)
def health(request: Request) -> Health:
    settings = request.app.state.settings
    supervisor: service.Supervisor | None = getattr(request.app.state, "supervisor", None)
    supervised = supervisor.workers() if supervisor is not None else []
    try:
        with request.app.state.session_factory() as session:
            rows = list(service.worker_rows(session))
    except (DBAPIError, PoolTimeoutError):
        rows = None
    return service.health(rows, supervised=supervised, stale_after_s=settings.worker_stale_after_s)
