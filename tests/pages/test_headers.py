"""U12: pages behind any proxy and hostile Host headers: no absolute URL is built from the Host header, every
response carries the security headers, the pages have no inline script or style, and the API docs load their
assets from this server."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.security_headers import CONTENT_SECURITY_POLICY
from app.settings import Settings


@pytest.fixture
def client(tmp_path: Any, database_url: str, session_factory: Any) -> Any:
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url)
    with TestClient(create_app(settings, session_factory=session_factory)) as c:
        yield c


@pytest.mark.parametrize("path", ["/", "/docs", "/api/v1/health", "/challenges/nowhere"])
def test_a_hostile_host_header_never_reaches_a_link(client: TestClient, path: str) -> None:
    r = client.get(path, headers={"Host": "evil.example"})
    assert "evil.example" not in r.text
    assert r.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["referrer-policy"] == "same-origin"


def test_pages_have_no_inline_script_or_style_and_docs_are_served_here(client: TestClient) -> None:
    for path in ("/", "/docs"):
        html = client.get(path).text
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), path  # every script is a file
        assert "style=" not in html
        assert "<style" not in html
        assert "cdn" not in html.lower()
        for link in re.findall(r'(?:src|href)="([^"]*)"', html):
            assert link.startswith("#") or (link.startswith("/") and not link.startswith("//")), (path, link)
    docs = client.get("/docs").text
    for asset in re.findall(r'(?:src|href)="([^"]+)"', docs):
        assert asset.startswith("/"), asset
        assert client.get(asset).status_code == 200, asset


def test_links_follow_the_mount_path_behind_a_proxy(tmp_path: Any, database_url: str, session_factory: Any) -> None:
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url)
    with TestClient(create_app(settings, session_factory=session_factory), root_path="/midog") as c:
        html = c.get("/").text
    assert 'href="/midog/static/style.css"' in html
    assert 'href="/midog/docs"' in html


def test_only_trusted_hosts_are_answered_when_configured(
    tmp_path: Any, database_url: str, session_factory: Any
) -> None:
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url, trusted_hosts=["midog.example.org"])
    with TestClient(create_app(settings, session_factory=session_factory), base_url="http://midog.example.org") as c:
        assert c.get("/api/v1/health").status_code == 200
        assert c.get("/api/v1/health", headers={"Host": "evil.example"}).status_code == 400
