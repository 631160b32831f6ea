"""The Jinja2 templates of every page (app/templates) with their filters and context processors.

Its own module so that the page modules (router, account, organiser, report) share it without importing each
other. Must not import the worker or any router.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.templating import Jinja2Templates

from app.pages.session import nav_context
from app.pages.views import fmt, fmt_date, sort_value

PACKAGE_DIR = Path(__file__).resolve().parent.parent


def root_context(request: Request) -> dict[str, Any]:
    """`root`: the path the app is mounted at behind a proxy (uvicorn's root_path). Links are built from it and
    never from the Host header, which the client chooses."""
    return {"root": str(request.scope.get("root_path", "")).rstrip("/")}


templates = Jinja2Templates(directory=PACKAGE_DIR / "templates", context_processors=[root_context, nav_context])
templates.env.filters["fmt"] = fmt
templates.env.filters["fmt_date"] = fmt_date
templates.env.filters["sort_value"] = sort_value
