"""Security headers on every response, pages and API alike (an ASGI middleware).

- Content-Security-Policy: everything from this origin only; no inline script or style anywhere (pages use
  static/*.js and static/*.css, the API docs page too), no plugins, no <base>, forms post here only, and no
  page may be framed (frame-ancestors 'none').
- X-Content-Type-Options: nosniff; X-Frame-Options: DENY (for browsers without frame-ancestors);
  Referrer-Policy: same-origin; Cross-Origin-Opener-Policy: same-origin.
Headers the application set itself are kept. `report_policy` is the policy of a served self-contained page
(the offline report, a test set's domain report): its own inline stylesheets, nothing else.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any


def style_hash(css: str) -> str:
    """The CSP source that allows exactly this inline stylesheet."""
    return "'sha256-" + base64.b64encode(hashlib.sha256(css.encode()).digest()).decode() + "'"


def report_policy(*css: str) -> str:
    """Content-Security-Policy of a served self-contained page: its own inline stylesheets, nothing else."""
    sources = " ".join(style_hash(c) for c in css) or "'none'"
    return f"default-src 'none'; style-src {sources}; base-uri 'none'; form-action 'none'"


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
HEADERS = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
)


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(name, value) for name, value in HEADERS if name not in present]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)
