"""U5: property-based requests from the OpenAPI schema, as anonymous, participant and organiser: no 5xx,
status codes, content types and bodies as documented, and participants never reach admin operations.

The example count is small on purpose (the suite runs in about a minute over both backends)."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from api_helpers import World
from fastapi import FastAPI
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from app.settings import Settings

EXAMPLES = 6
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture
def roles(world: World, settings: Settings) -> dict[str, dict[str, str]]:
    settings.sse_max_duration_s = 0.1
    team = world.register("Schema Team")
    sub = world.submit(team["headers"]).json()
    world.finish(sub["id"])
    return {"anonymous": {}, "participant": team["headers"], "organiser": world.admin()}


def test_api_conforms_for_every_role(app: FastAPI, roles: dict[str, dict[str, str]]) -> None:
    # schemathesis' own pytest plugin does not support this pytest yet, so each operation is driven here
    api = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures: list[str] = []
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) >= 30
    for operation in operations:

        @given(case=operation.as_strategy())
        @hypothesis_settings(
            max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck)
        )
        def run(case: Any) -> None:
            for role, headers in roles.items():
                response = case.call_and_validate(headers=headers, checks=CHECKS)
                if role != "organiser" and case.path.startswith("/api/v1/admin"):
                    assert response.status_code in (401, 403), (role, response.status_code)

        try:
            run()
        except Exception as exc:  # collect every operation's failure, then report them together
            failures.append(f"{operation.method.upper()} {operation.path}: {str(exc)[:1500]}")
    assert not failures, "\n\n".join(failures)
