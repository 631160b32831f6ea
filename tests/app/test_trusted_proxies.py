"""Forwarded headers are believed only from the proxies MIDOG_TRUSTED_PROXIES names (default none)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from app.auth.router import client_address
from app.main import create_app
from app.settings import Settings


def _seen_address(tmp_path: Any, database_url: str, trusted: str, peer: str) -> str:
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url, trusted_proxies=trusted)
    app: FastAPI = create_app(settings)

    @app.get("/test-address")
    def address(request: Request) -> dict[str, str]:
        return {"address": client_address(request)}

    with TestClient(app, client=(peer, 50000)) as client:
        return str(client.get("/test-address", headers={"X-Forwarded-For": "203.0.113.9"}).json()["address"])


@pytest.mark.parametrize(
    ("trusted", "peer", "seen"),
    [
        ("", "127.0.0.1", "127.0.0.1"),  # the default: not even loopback is believed
        ("10.0.0.5", "127.0.0.1", "127.0.0.1"),
        ("10.0.0.5", "10.0.0.5", "203.0.113.9"),
        ("10.0.0.0/8, 192.0.2.1", "10.1.2.3", "203.0.113.9"),
    ],
)
def test_x_forwarded_for_is_believed_only_from_a_trusted_proxy(
    tmp_path: Any, database_url: str, trusted: str, peer: str, seen: str
) -> None:
    assert _seen_address(tmp_path, database_url, trusted, peer) == seen
