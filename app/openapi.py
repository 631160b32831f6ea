"""Error responses documented on every route (the API answers errors only as app.errors.ErrorBody)."""

from __future__ import annotations

from typing import Any

from app.errors import ErrorBody


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the given status codes."""
    descriptions = {
        400: "Bad request",
        401: "Missing, unknown, expired or revoked token",
        403: "Forbidden (wrong scope, phase closed, not approved, gating)",
        404: "Not found",
        409: "Conflict",
        413: "Upload over the size limit",
        415: "Unsupported media type",
        422: "Invalid input",
        429: "Quota exceeded (see `reset_at` and Retry-After)",
        503: "Database unavailable",
    }
    return {code: {"model": ErrorBody, "description": descriptions[code]} for code in codes}


COMMON = errors(422, 503)
AUTHED = errors(401, 403, 422, 503)
