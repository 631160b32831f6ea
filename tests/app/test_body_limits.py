"""U8: request bodies are bounded per route before authentication: a declared length over the limit is refused
at once, a chunked body as soon as it passes the limit; streamed uploads keep their own limits."""

from __future__ import annotations

from collections.abc import Iterator

from api_helpers import World


def _chunks(total: int, size: int = 4096) -> Iterator[bytes]:
    sent = 0
    yield b'{"email": "'
    while sent < total:
        yield b"x" * size
        sent += size
    yield b'", "password": "p"}'


def test_an_oversized_login_body_is_refused_before_it_is_read(world: World) -> None:
    client = world.client
    declared = client.post(
        "/api/v1/auth/login",
        content=b"{}",
        headers={"Content-Length": str(150 * 1024 * 1024), "Content-Type": "application/json"},
    )
    assert declared.status_code == 413
    assert declared.json()["error"] == "payload_too_large"
    assert "16384" in declared.json()["detail"]
    chunked = client.post("/api/v1/auth/login", content=_chunks(200_000), headers={"Content-Type": "application/json"})
    assert chunked.status_code == 413
    assert chunked.json()["error"] == "payload_too_large"
    # A login of ordinary size is read and answered as before.
    normal = client.post("/api/v1/auth/login", json={"email": "nobody@example.org", "password": "wrong-password"})
    assert normal.status_code == 401


def test_admin_json_has_its_limit_and_uploads_keep_theirs(world: World) -> None:
    huge = {"slug": "x", "title": "t", "description": "d" * (2 * 1024 * 1024)}
    r = world.client.post("/api/v1/admin/challenges", headers=world.admin(), json=huge)
    assert r.status_code == 413
    # Refused before authentication: no token needed to be turned away.
    assert world.client.post("/api/v1/admin/challenges", json=huge).status_code == 413
    team = world.register("Alpha")
    assert world.submit(team["headers"]).status_code == 201  # multipart uploads stream under their own limits
