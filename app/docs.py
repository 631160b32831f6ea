"""The API docs page (/docs): Swagger UI from the installed `fastapi-offline` package, never a CDN, started by
static/docs.js (no inline script, as the CSP requires). Links are relative to the mount path."""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>midog-eval API</title>
<link rel="stylesheet" href="{root}/static/docs/swagger-ui.css">
</head>
<body>
<div id="swagger-ui" data-openapi="{root}{openapi}"></div>
<script src="{root}/static/docs/swagger-ui-bundle.js"></script>
<script src="{root}/static/docs.js"></script>
</body>
</html>
"""


def install_docs(app: FastAPI) -> None:
    """Serve Swagger UI's files from the installed package and the page at /docs."""
    assets = files("fastapi_offline") / "static"
    app.mount("/static/docs", StaticFiles(directory=str(assets)), name="docs-assets")
    openapi = app.openapi_url or "/openapi.json"

    @app.get("/docs", include_in_schema=False)
    def docs(request: Request) -> HTMLResponse:
        root = str(request.scope.get("root_path", "")).rstrip("/")
        return HTMLResponse(_PAGE.format(root=root, openapi=openapi))
