"""AppError hierarchy: services raise these; one handler in app.main turns them into {"error", "detail"}.

Must not import FastAPI (services that raise these are also used by the worker and the CLI).
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    """The one error shape of the API."""

    error: str = Field(description="Stable machine-readable code, e.g. `quota_exceeded`.")
    detail: str = Field(description="Human-readable message.")
    reset_at: datetime | None = Field(default=None, description="For `quota_exceeded`: when the quota resets.")


class AppError(Exception):
    status_code = 400
    code = "bad_request"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}

    def body(self) -> ErrorBody:
        return ErrorBody(error=self.code, detail=self.message)


class NotAuthenticated(AppError):
    status_code = 401
    code = "not_authenticated"

    def __init__(self, message: str = "a valid bearer token is required") -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(AppError):
    status_code = 403
    code = "forbidden"


class PhaseClosed(Forbidden):
    code = "phase_closed"


class NotFound(AppError):
    status_code = 404
    code = "not_found"


class Conflict(AppError):
    status_code = 409
    code = "conflict"


class PayloadTooLarge(AppError):
    status_code = 413
    code = "payload_too_large"


class UnsupportedMediaType(AppError):
    status_code = 415
    code = "unsupported_media_type"


class InvalidInput(AppError):
    status_code = 422
    code = "invalid_input"


class TooManyRequests(AppError):
    """Throttled (login, registration, a busy resource): Retry-After says when to try again."""

    status_code = 429
    code = "too_many_requests"

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message, headers={"Retry-After": str(max(1, retry_after_s))})


class QuotaExceeded(AppError):
    status_code = 429
    code = "quota_exceeded"

    def __init__(self, message: str, *, reset_at: datetime, retry_after_s: int) -> None:
        super().__init__(message, headers={"Retry-After": str(max(1, retry_after_s))})
        self.reset_at = reset_at

    def body(self) -> ErrorBody:
        return ErrorBody(error=self.code, detail=self.message, reset_at=self.reset_at)
