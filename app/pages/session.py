"""Browser sessions of the HTML pages: a session cookie and CSRF protection. Pure helpers; no routes.

Rules:
- The session cookie `midog_session` holds a login token (the API's own kind, revocable, with its expiry):
  HttpOnly, SameSite=Lax, Path=/, Secure whenever the request came over https (behind a proxy: as the
  trusted proxies of MIDOG_TRUSTED_PROXIES report it). The JSON API never reads it: the API authenticates by
  the Authorization header only, so a cookie can never make a cross-site request to the API act for someone.
- Over https both cookies are named with the `__Host-` prefix (`__Host-midog_session`, `__Host-midog_csrf`):
  the browser then accepts them only Secure, for Path=/ and from this host itself, so neither a sibling
  subdomain nor a plain-http page can plant them; over https only the prefixed names are read.
- CSRF is bound to the session: every form that changes something carries, as its `csrf` field (or query
  parameter, for the streamed upload), HMAC-SHA256 keyed by the session's token over the `midog_csrf`
  cookie (random, HttpOnly, SameSite=Strict). A planted CSRF cookie does not help an attacker, who does not
  know the session's token. Forms without a session (log in, register, join) carry the cookie's value itself.
  A POST whose value is missing or differs is refused (403), as is one whose Origin names another site.
"""

from __future__ import annotations

import hashlib
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
HOST_PREFIX = "__Host-"


def secure(request: Request) -> bool:
    return request.url.scheme == "https"


def session_cookie(request: Request) -> str:
    """The session cookie's name for this request: `__Host-`-prefixed over https."""
    return HOST_PREFIX + SESSION_COOKIE if secure(request) else SESSION_COOKIE


def csrf_cookie(request: Request) -> str:
    return HOST_PREFIX + CSRF_COOKIE if secure(request) else CSRF_COOKIE


def _bound(cookie: str, session: str | None) -> str:
    """The form value for this CSRF cookie: bound to the session's token when there is a session."""
    if not session:
        return cookie
    return hmac.new(session.encode(), b"csrf:" + cookie.encode(), hashlib.sha256).hexdigest()


def _cookie_value(request: Request) -> str:
    """The browser's CSRF cookie value, or a new one (set on the response by `remember_csrf`)."""
    existing = request.cookies.get(csrf_cookie(request), "")
    if len(existing) >= 32:
        return existing
    fresh: str = request.state.__dict__.setdefault("new_csrf", secrets.token_urlsafe(32))
    return fresh


def csrf_value(request: Request) -> str:
    """The value this browser's forms carry as `csrf` (see the module's rules)."""
    return _bound(_cookie_value(request), request.cookies.get(session_cookie(request)))


def remember_csrf(request: Request, response: Response) -> Response:
    """Set the CSRF cookie when `csrf_value` had to make one."""
    fresh = request.state.__dict__.get("new_csrf")
    if fresh:
        response.set_cookie(
            csrf_cookie(request),
            fresh,
            httponly=True,
            samesite="strict",
            secure=secure(request),
            path="/",
            max_age=86400 * 30,
        )
    return response


def check_csrf(request: Request, sent: str | None) -> None:
    """Refuse (403) a changing request whose CSRF value or Origin is not this site's."""
    origin = request.headers.get("origin")
    if origin is not None and origin != f"{request.url.scheme}://{request.url.netloc}":
        raise Forbidden("this form was sent from another site")
    cookie = request.cookies.get(csrf_cookie(request), "")
    expected = _bound(cookie, request.cookies.get(session_cookie(request))) if len(cookie) >= 32 else ""
    if not expected or not sent or not hmac.compare_digest(expected.encode(), sent.encode()):
        raise Forbidden("the form has expired: reload the page and send it again")


def start_session(request: Request, response: Response, token: str, max_age_s: int) -> Response:
    response.set_cookie(
        session_cookie(request),
        token,
        httponly=True,
        samesite="lax",
        secure=secure(request),
        path="/",
        max_age=max_age_s,
    )
    return response


def end_session(request: Request, response: Response) -> Response:
    response.delete_cookie(session_cookie(request), path="/", secure=secure(request), httponly=True)
    return response


def viewer(request: Request, db: Session) -> Principal | None:
    """The logged-in principal of the session cookie; None without one, or when its token no longer works."""
    token = request.cookies.get(session_cookie(request))
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
    return {"signed_in": bool(request.cookies.get(session_cookie(request))), "csrf": csrf_value(request)}
