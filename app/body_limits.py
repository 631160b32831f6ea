"""Request bodies bounded before anything reads them: an ASGI middleware with a byte limit per route.

A declared Content-Length over the limit is answered 413 at once, before authentication and before a byte
is read; a body sent without a length (chunked) is counted as it arrives and refused (413) as soon as it
passes the limit, so at most one chunk beyond the limit is ever held. Limits: `max_auth_body_bytes` for
/api/v1/auth/ (login and registration are reachable by anyone), `max_json_body_bytes` for every other JSON
body. The streamed uploads (submissions, test-set archives, a GPU host's outputs) enforce their own, larger
limits while writing to disk and are left to that (app.submissions.upload, app.runner.router).

A plain ASGI wrapper (Starlette's HTTPException is its only import from the framework); must not import the
routers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.exceptions import HTTPException

from app.errors import PayloadTooLarge

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# The multipart uploads stream to disk under their own size limits (413 while writing).
STREAMED_UPLOADS = re.compile(
    r"^(/api/v1/(phases/[^/]+/submissions|admin/test-sets/upload"
    r"|runner/jobs/[^/]+/attempts/[^/]+/(predictions|features|logs/[^/]+))|/phases/[^/]+/submit)/?$"
)
AUTH_PREFIX = "/api/v1/auth/"
# the pages' account forms: reachable by anyone, so bounded like the API's /auth/
ACCOUNT_FORMS = frozenset(
    {"/register", "/login", "/join", "/logout", "/team/invitations", "/team/name", "/organiser/login"}
)


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, *, auth_bytes: int, json_bytes: int) -> None:
        self.app = app
        self.auth_bytes = auth_bytes
        self.json_bytes = json_bytes

    def limit_for(self, method: str, path: str) -> int | None:
        if method in {"GET", "HEAD", "OPTIONS"}:
            return 0
        if STREAMED_UPLOADS.match(path):
            return None
        return self.auth_bytes if path.startswith(AUTH_PREFIX) or path in ACCOUNT_FORMS else self.json_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["method"], scope["path"])
        if limit is None:
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _refuse(send, f"request body of {declared} bytes exceeds the limit of {limit} bytes")
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    # An HTTPException passes through FastAPI's body reading as it is (other errors become 400).
                    raise HTTPException(413, f"request body exceeds the limit of {limit} bytes")
            return message

        await self.app(scope, counted, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _refuse(send: Send, detail: str) -> None:
    body = json.dumps({"error": PayloadTooLarge.code, "detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    # The client may still be sending: closing the connection keeps its body from being read at all.
    headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})
