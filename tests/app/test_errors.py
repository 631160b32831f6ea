"""Uniform error JSON, the OpenAPI error documentation, and a dead database answering 503 (not a traceback)."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from app.db import make_engine, make_session_factory
from app.main import create_app
from app.settings import Settings


def test_unknown_route_and_bad_input_use_the_error_shape(client: TestClient) -> None:
    r = client.get("/api/v1/nope")
    assert r.status_code == 404
    assert r.json() == {"error": "not_found", "detail": "Not Found"}
    r = client.get("/api/v1/phases/not-a-number")
    assert r.status_code == 422
    assert set(r.json()) == {"error", "detail"}
    r = client.post("/api/v1/auth/register", json={"team_name": "x"})
    assert r.status_code == 422
    assert r.json()["error"] == "invalid_input"


def test_database_down_is_503_json(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url="postgresql+psycopg://nobody@127.0.0.1:9/none")
    engine = make_engine(settings.database_url, settings=settings, connect_args={"connect_timeout": 1})
    app = create_app(settings, session_factory=make_session_factory(engine))
    with TestClient(app, raise_server_exceptions=False) as client:
        for path in ("/api/v1/challenges", "/api/v1/phases/1/leaderboard"):
            r = client.get(path)
            assert r.status_code == 503
            assert r.json()["error"] == "database_unavailable"
            assert "Traceback" not in r.text
        # The API itself still answers its health check, and says what is wrong.
        assert client.get("/api/v1/health").json() == {"status": "degraded", "database": "unavailable", "workers": []}
    engine.dispose()


def test_every_route_is_documented_with_its_errors(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    for path, operations in schema["paths"].items():
        for method, op in operations.items():
            assert op.get("summary"), f"{method} {path} has no summary"
            takes_input = bool(op.get("parameters") or op.get("requestBody"))
            if takes_input:
                ref = op["responses"]["422"]["content"]["application/json"]["schema"]["$ref"]
                assert ref.endswith("/ErrorBody"), f"{method} {path} documents FastAPI's 422, not ErrorBody"
    assert "HTTPValidationError" not in schema.get("components", {}).get("schemas", {})
