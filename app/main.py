"""create_app(): settings, session factory, routers (health included), the uniform error handlers.

Errors always answer {"error": code, "detail": message}; a database that is down answers 503, never a
traceback. Templates and static pages are added by the pages module.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import Session, sessionmaker
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

from app.admin.router import router as admin_router
from app.auth.router import router as auth_router
from app.auth.throttle import Throttle
from app.body_limits import BodyLimitMiddleware
from app.challenges.router import router as challenges_router
from app.db import make_engine, make_session_factory
from app.docs import install_docs
from app.errors import AppError, ErrorBody, PayloadTooLarge
from app.leaderboard.router import router as leaderboard_router
from app.pages.report import api_router as report_router
from app.pages.router import install_pages
from app.runner.router import router as runner_router
from app.security_headers import SecurityHeadersMiddleware
from app.settings import Settings, get_settings
from app.submissions.checker import Checker
from app.submissions.router import router as submissions_router
from app.worker_hosts.router import router as health_router

log = logging.getLogger(__name__)


def _error(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(ErrorBody(error=code, detail=detail).model_dump(exclude_none=True), status, headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def app_error(_request: Request, exc: AppError) -> JSONResponse:
        body = exc.body().model_dump(mode="json", exclude_none=True)
        return JSONResponse(body, exc.status_code, exc.headers or None)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()))
        message = str(first.get("msg", "invalid"))
        if first.get("type") == "extra_forbidden":
            message = "unknown field; check its spelling against the API documentation (/docs)"
        return _error(422, "invalid_input", f"{where}: {message}".strip(": "))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_").replace("-", "_")
        code = {413: PayloadTooLarge.code}.get(exc.status_code, code)
        return _error(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(OperationalError)
    @app.exception_handler(PoolTimeoutError)
    async def database_down(_request: Request, exc: Exception) -> JSONResponse:
        log.error("database unavailable: %s", exc)
        return _error(
            503, "database_unavailable", "the database is unavailable; try again shortly", {"Retry-After": "5"}
        )

    @app.exception_handler(DBAPIError)
    async def database_error(_request: Request, exc: DBAPIError) -> JSONResponse:
        if exc.connection_invalidated:
            return _error(
                503, "database_unavailable", "the database connection was lost; try again shortly", {"Retry-After": "5"}
            )
        log.exception("database error", exc_info=exc)
        return _error(500, "internal_error", "internal error")

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return _error(500, "internal_error", "internal error")


def create_app(settings: Settings | None = None, *, session_factory: sessionmaker[Session] | None = None) -> FastAPI:
    """The API application. Tests pass their own settings and a session factory bound to a test transaction
    (used for reads and writes alike)."""
    settings = settings or get_settings()
    owned_engine = None
    write_session_factory = session_factory
    if session_factory is None:
        owned_engine = make_engine(settings.database_url, settings=settings)
        session_factory = make_session_factory(owned_engine)
        write_session_factory = make_session_factory(owned_engine, write=True)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        settings.storage_path.mkdir(parents=True, exist_ok=True)
        yield
        if owned_engine is not None:
            owned_engine.dispose()

    app = FastAPI(
        title="midog-eval",
        version="0.1.0",
        summary="Evaluation server for MIDOG-style mitotic-figure detection challenges",
        lifespan=lifespan,
        responses={500: {"model": ErrorBody, "description": "Internal error"}},
        docs_url=None,  # app.docs serves it from the installed package
        redoc_url=None,
    )
    app.add_middleware(
        BodyLimitMiddleware, auth_bytes=settings.max_auth_body_bytes, json_bytes=settings.max_json_body_bytes
    )
    app.add_middleware(SecurityHeadersMiddleware)
    if settings.trusted_hosts != ["*"]:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=settings.trusted_hosts)
    if settings.trusted_proxies.strip():
        # Forwarded headers are believed from these peers only (uvicorn's forwarded_allow_ips); serve and the
        # container image run uvicorn with its own proxy-header handling off, so this is the one place.
        from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

        trusted = [p.strip() for p in settings.trusted_proxies.split(",") if p.strip()]
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=trusted)
    app.state.settings = settings
    app.state.checker = Checker(settings)
    app.state.throttle = Throttle(
        storage_url=settings.throttle_storage_url or "memory://",
        login_per_address=settings.login_rate_per_address,
        login_failures_per_account=settings.login_failures_per_account,
        login_failures_per_account_address=settings.login_failures_per_account_address,
        slowdown_s=settings.login_slowdown_s,
        register_per_address=settings.registration_rate_per_address,
        max_concurrent_hashes=settings.max_concurrent_password_hashes,
    )
    app.state.session_factory = session_factory
    app.state.write_session_factory = write_session_factory
    install_error_handlers(app)

    for router in (
        health_router,
        auth_router,
        challenges_router,
        submissions_router,
        leaderboard_router,
        report_router,
        admin_router,
        runner_router,
    ):
        app.include_router(router)
    install_docs(app)  # before the pages: its /static/docs mount must come before their /static
    install_pages(app)
    return app
