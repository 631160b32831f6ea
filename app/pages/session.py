"""Browser sessions of the HTML pages: a session cookie and CSRF protection. Pure helpers; no routes.

Rules:
- The session cookie `midog_session` holds a login token (the API's own kind, revocable, with its expiry):
  HttpOnly, SameSite=Lax, Path=/, Secure whenever the request came over https (behind a proxy: as uvicorn's
  --proxy-headers report it). The JSON API never reads it: the API authenticates by the Authorization header
  only, so a cookie can never make a cross-site request to the API act for someone.
- Every form that changes something carries the value of the `midog_csrf` cookie (random, HttpOnly,
  SameSite=Strict) as its `csrf` field (or query parameter, for the streamed upload); a POST whose value is
  missing or differs is refused (403), as is one whose Origin header names another site.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from app.auth.service import Principal, authenticate
from app.errors import AppError, Forbidden

SESSION_COOKIE = "midog_session"
CSRF_COOKIE = "midog_csrf"


def secure(request: Request) -> bool:
    return request.url.scheme == "https"


def csrf_value(request: Request) -> str:
    """The browser's CSRF value: its cookie's, or a new one (set on the response by `remember_csrf`)."""
    existing = request.cookies.get(CSRF_COOKIE, "")
    if len(existing) >= 32:
        return existing
    fresh: str = request.state.__dict__.setdefault("new_csrf", secrets.token_urlsafe(32))
    return fresh


def remember_csrf(request: Request, response: Response) -> Response:
    """Set the CSRF cookie when `csrf_value` had to make one."""
    fresh = request.state.__dict__.get("new_csrf")
    if fresh:
        response.set_cookie(
            CSRF_COOKIE, fresh, httponly=True, samesite="strict", secure=secure(request), path="/", max_age=86400 * 30
        )
    return response


def check_csrf(request: Request, sent: str | None) -> None:
    """Refuse (403) a changing request whose CSRF value or Origin is not this site's."""
    origin = request.headers.get("origin")
    if origin is not None and origin != f"{request.url.scheme}://{request.url.netloc}":
        raise Forbidden("this form was sent from another site")
    cookie = request.cookies.get(CSRF_COOKIE, "")
    if not cookie or not sent or not hmac.compare_digest(cookie.encode(), sent.encode()):
        raise Forbidden("the form has expired: reload the page and send it again")


def start_session(request: Request, response: Response, token: str, max_age_s: int) -> Response:
    response.set_cookie(
        SESSION_COOKIE, token, httponly=True, samesite="lax", secure=secure(request), path="/", max_age=max_age_s
    )
    return response


def end_session(response: Response) -> Response:
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


def viewer(request: Request, db: Session) -> Principal | None:
    """The logged-in principal of the session cookie; None without one, or when its token no longer works."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    try:
        principal = authenticate(db, token=token)
    except AppError:
        return None
    db.commit()  # end the lookup's read transaction (see app.deps._authenticated)
    return principal


def nav_context(request: Request) -> dict[str, Any]:
    """What the page header needs: whether a session cookie is present (the pages behind it check it)."""
    return {"signed_in": bool(request.cookies.get(SESSION_COOKIE)), "csrf": csrf_value(request)}
