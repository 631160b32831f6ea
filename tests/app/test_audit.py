"""D2: organiser tokens expire by default and carry scopes; every write through the organiser API is recorded
(who, what, when) and readable there."""

from __future__ import annotations

from datetime import timedelta

from api_helpers import World, bearer
from fastapi.routing import APIRoute

from app.admin.audit import record_admin_writes
from app.auth.service import create_token
from app.tables import TokenScope, utcnow


def test_a_read_only_organiser_token_reads_and_changes_nothing(world: World) -> None:
    reader = create_token(world.db, scope=TokenScope.ORGANISER_READ, name="auditor")
    world.db.commit()
    headers = bearer(reader.token)
    assert world.client.get("/api/v1/admin/teams", headers=headers).status_code == 200
    assert world.client.get("/api/v1/admin/audit", headers=headers).status_code == 200
    r = world.client.patch(f"/api/v1/admin/phases/{world.phase.id}", headers=headers, json={"daily_quota": 9})
    assert r.status_code == 403
    assert "may only read" in r.json()["detail"]


def test_tokens_expire_by_default_and_never_in_the_past(world: World) -> None:
    r = world.client.post("/api/v1/admin/tokens", headers=world.admin(), json={"scope": "organiser", "name": "ops"})
    assert r.status_code == 201
    expires = r.json()["expires_at"]
    assert expires is not None
    assert expires.startswith((utcnow() + timedelta(days=30)).date().isoformat())
    past = (utcnow() - timedelta(minutes=1)).isoformat()
    r = world.client.post(
        "/api/v1/admin/tokens", headers=world.admin(), json={"scope": "organiser", "expires_at": past}
    )
    assert r.status_code == 422
    assert r.json()["detail"].startswith("expires_at: lies in the past")
    # No later than the maximum lifetime (a year by default): 9999-12-31 is refused, a year less a day is not.
    for far, status in (("9999-12-31T00:00:00+00:00", 422), ((utcnow() + timedelta(days=364)).isoformat(), 201)):
        r = world.client.post(
            "/api/v1/admin/tokens", headers=world.admin(), json={"scope": "organiser", "expires_at": far}
        )
        assert r.status_code == status, r.text
    assert (
        "maximum token lifetime of 365 days"
        in world.client.post(
            "/api/v1/admin/tokens",
            headers=world.admin(),
            json={"scope": "organiser", "expires_at": "9999-12-31T00:00Z"},
        ).json()["detail"]
    )


def test_every_admin_write_is_recorded_with_who_what_and_when(world: World) -> None:
    before = utcnow()
    url = f"/api/v1/admin/phases/{world.phase.id}"
    assert world.client.patch(url, headers=world.admin(), json={"daily_quota": 3}).status_code == 200
    created = world.client.post(
        "/api/v1/admin/tokens", headers=world.admin(), json={"scope": "organiser_read", "name": "auditor"}
    )
    assert created.status_code == 201
    # A write that fails changes nothing and records nothing.
    assert (
        world.client.patch("/api/v1/admin/phases/99999", headers=world.admin(), json={"title": "x"}).status_code == 404
    )
    # Reads are not recorded.
    world.client.get("/api/v1/admin/teams", headers=world.admin())
    events = world.client.get("/api/v1/admin/audit", headers=world.admin()).json()
    assert [e["action"] for e in events] == ["create_api_token", "update_phase"]
    newest, oldest = events
    assert oldest["target"] == f"PATCH {url}"
    assert oldest["target_id"] == world.phase.id
    assert oldest["details"] == {"daily_quota": 3}
    assert oldest["actor"].startswith("mdg_")
    assert oldest["actor"].endswith("tests")
    assert oldest["at"] >= before.isoformat()[:19]
    assert newest["details"] == {"scope": "organiser_read", "name": "auditor"}
    assert created.json()["token"] not in str(events)


def test_every_write_route_of_the_organiser_api_goes_through_the_audit(world: World) -> None:
    """The audit is a dependency of the organiser router itself, and that router serves every organiser path."""
    from app.admin import router as admin

    assert any(d.dependency is admin._audit for d in admin.router.dependencies)
    served = {route.path for route in admin.router.routes if isinstance(route, APIRoute)}
    published = {p for p in world.client.get("/openapi.json").json()["paths"] if p.startswith("/api/v1/admin")}
    assert published == served
    writes = [r for r in admin.router.routes if isinstance(r, APIRoute) and r.methods - {"GET", "HEAD"}]
    assert len(writes) >= 14
    assert record_admin_writes.__doc__
