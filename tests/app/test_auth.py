"""Token auth: missing, unknown, expired, revoked -> 401; wrong scope -> 403; tokens stored as sha256."""

from __future__ import annotations

from datetime import timedelta

from api_helpers import PASSWORD, World, bearer
from sqlalchemy import select

from app.auth.service import create_token, hash_token
from app.tables import ApiToken, Participant, TokenScope, utcnow


def test_register_login_me(world: World) -> None:
    team = world.register("Team Alpha")
    me = world.client.get("/api/v1/me", headers=team["headers"])
    assert me.status_code == 200
    assert me.json()["team"]["name"] == "Team Alpha"
    login = world.client.post("/api/v1/auth/login", json={"email": "teamalpha@example.org", "password": PASSWORD})
    assert login.status_code == 200
    token = login.json()["token"]
    assert world.client.get("/api/v1/me", headers=bearer(token)).json()["participant"]["email"] == (
        "teamalpha@example.org"
    )
    # only the hash is stored, and the password is an argon2 hash
    row = world.db.scalars(select(ApiToken).where(ApiToken.token_hash == hash_token(token))).one()
    assert token not in (row.token_hash, row.prefix)
    participant = world.db.scalars(select(Participant).where(Participant.email == "teamalpha@example.org")).one()
    assert participant.password_hash.startswith("$argon2")


def test_wrong_password_and_duplicate_registration(world: World) -> None:
    world.register("Team Alpha")
    r = world.client.post("/api/v1/auth/login", json={"email": "teamalpha@example.org", "password": "wrong-pass"})
    assert r.status_code == 401
    assert r.json()["error"] == "not_authenticated"
    r = world.client.post(
        "/api/v1/auth/register",
        json={"team_name": "team alpha", "email": "other@example.org", "password": PASSWORD},
    )
    assert r.status_code == 409
    assert set(r.json()) == {"error", "detail"}


def test_missing_unknown_expired_revoked_tokens_are_401(world: World) -> None:
    team = world.register("Team Alpha")
    assert world.client.get("/api/v1/me").status_code == 401
    r = world.client.get("/api/v1/me", headers=bearer("mdg_not-a-token"))
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"] == "Bearer"
    participant = world.db.get(Participant, team["participant"]["id"])
    expired = create_token(
        world.db, scope=TokenScope.PARTICIPANT, participant=participant, expires_at=utcnow() - timedelta(seconds=1)
    )
    world.db.commit()
    assert world.client.get("/api/v1/me", headers=bearer(expired.token)).status_code == 401
    # logout revokes the token used
    assert world.client.post("/api/v1/auth/logout", headers=team["headers"]).status_code == 204
    r = world.client.get("/api/v1/me", headers=team["headers"])
    assert r.status_code == 401
    assert r.json() == {"error": "not_authenticated", "detail": "token revoked"}


def test_wrong_scope_is_403(world: World) -> None:
    team = world.register("Team Alpha")
    r = world.client.get("/api/v1/admin/teams", headers=team["headers"])
    assert r.status_code == 403
    assert r.json()["error"] == "forbidden"
    # organiser tokens belong to no team: participant endpoints refuse them
    assert world.client.get("/api/v1/submissions", headers=world.admin()).status_code == 403
    assert world.client.get("/api/v1/admin/teams", headers=world.admin()).status_code == 200


def test_admin_can_revoke_a_token(world: World) -> None:
    team = world.register("Team Alpha")
    token_id = team["token"]["id"]
    assert world.client.delete(f"/api/v1/admin/tokens/{token_id}", headers=world.admin()).status_code == 204
    assert world.client.get("/api/v1/me", headers=team["headers"]).status_code == 401
    listed = world.client.get("/api/v1/admin/tokens", headers=world.admin()).json()
    assert all("token_hash" not in t for t in listed)


def test_team_members_join_by_invitation_with_their_own_password(world: World) -> None:
    """U13: nobody creates an account for somebody else; the invitee redeems a token with their own password."""
    team = world.register("Team Alpha")
    # The old way in is gone: a member cannot create another person's account.
    squat = world.client.post(
        "/api/v1/teams/me/members", headers=team["headers"], json={"email": "x@example.org", "password": PASSWORD}
    )
    assert squat.status_code in (404, 405)
    invited = world.client.post(
        "/api/v1/teams/me/invitations", headers=team["headers"], json={"email": "Second@Example.org"}
    )
    assert invited.status_code == 201, invited.text
    invitation = invited.json()
    assert invitation["email"] == "second@example.org"
    token = invitation["token"]
    listed = world.client.get("/api/v1/teams/me/invitations", headers=team["headers"]).json()
    assert [i["id"] for i in listed] == [invitation["id"]]
    assert "token" not in listed[0]
    # Only the invited address may use it, only with a password of its own that passes the policy.
    join = {"invitation": token, "email": "other@example.org", "password": PASSWORD}
    assert world.client.post("/api/v1/auth/join", json=join).status_code == 409
    weak = world.client.post("/api/v1/auth/join", json={**join, "email": "second@example.org", "password": "password1"})
    assert weak.status_code == 422
    r = world.client.post("/api/v1/auth/join", json={**join, "email": "second@example.org"})
    assert r.status_code == 201, r.text
    assert r.json()["team"]["id"] == team["team"]["id"]
    member = bearer(r.json()["token"]["token"])
    assert world.client.get("/api/v1/me", headers=member).json()["participant"]["email"] == "second@example.org"
    # Used once only; a revoked invitation is refused too.
    assert world.client.post("/api/v1/auth/join", json={**join, "email": "second@example.org"}).status_code == 404
    other = world.client.post("/api/v1/teams/me/invitations", headers=team["headers"], json={"email": "t@example.org"})
    revoke = world.client.delete(f"/api/v1/teams/me/invitations/{other.json()['id']}", headers=team["headers"])
    assert revoke.status_code == 204
    late = {"invitation": other.json()["token"], "email": "t@example.org", "password": PASSWORD}
    assert world.client.post("/api/v1/auth/join", json=late).status_code == 404
    # Inviting an address answers the same whether it has an account or not (no e-mail oracle); a registered
    # address is refused only when the invitation is redeemed.
    again = world.client.post(
        "/api/v1/teams/me/invitations", headers=team["headers"], json={"email": "second@example.org"}
    )
    fresh = world.client.post(
        "/api/v1/teams/me/invitations", headers=team["headers"], json={"email": "nobody-yet@example.org"}
    )
    assert again.status_code == fresh.status_code == 201
    assert set(again.json()) == set(fresh.json())
    used = {"invitation": again.json()["token"], "email": "second@example.org", "password": PASSWORD}
    assert world.client.post("/api/v1/auth/join", json=used).status_code == 409
    # One pending invitation per address and team.
    twice = world.client.post(
        "/api/v1/teams/me/invitations", headers=team["headers"], json={"email": "nobody-yet@example.org"}
    )
    assert twice.status_code == 409
    assert "pending invitation" in twice.json()["detail"]


def test_invitations_are_throttled_per_team(world: World) -> None:
    from app.auth.service import INVITATIONS_PER_TEAM_PER_HOUR

    team = world.register("Inviters")
    codes = [
        world.client.post(
            "/api/v1/teams/me/invitations", headers=team["headers"], json={"email": f"p{i}@example.org"}
        ).status_code
        for i in range(INVITATIONS_PER_TEAM_PER_HOUR + 1)
    ]
    assert codes == [201] * INVITATIONS_PER_TEAM_PER_HOUR + [429]
