"""U10 and U13: login and registration are throttled (429 with Retry-After), password hashes are bounded in
number, and accounts and names follow the rules (password policy, e-mail syntax, names that hide characters
or look like another team's)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from api_helpers import PASSWORD, World
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from app.auth import throttle as throttle_module
from app.auth.throttle import Throttle
from app.errors import TooManyRequests
from app.main import create_app
from app.settings import Settings


def _register(client: TestClient, team: str, email: str, password: str = PASSWORD) -> Any:
    return client.post("/api/v1/auth/register", json={"team_name": team, "email": email, "password": password})


@pytest.mark.parametrize(
    ("password", "says"),
    [
        ("12345678", "at least 10 characters"),
        ("        ", "at least 10 characters"),
        ("          ", "single repeated character"),
        ("1234567890", "most common passwords"),
        ("Password123", "most common passwords"),
        ("alice@example.org!", "e-mail address"),
        ("my-alice-password", "e-mail address"),
    ],
)
def test_weak_passwords_are_refused_with_the_rule(world: World, password: str, says: str) -> None:
    r = _register(world.client, "Alice", "alice@example.org", password)
    assert r.status_code == 422
    assert r.json()["detail"].startswith("password: ")
    assert says in r.json()["detail"]


def test_e_mail_addresses_are_checked_and_stored_in_lower_case(world: World) -> None:
    for bad in ("x@y", "no-at-sign", "a b@example.org"):
        r = _register(world.client, f"Team {bad}", bad)
        assert r.status_code == 422, bad
        assert "email" in r.json()["detail"].split(":")[0]
    r = _register(world.client, "Upper", "Alice.B@Example.ORG")
    assert r.status_code == 201
    assert r.json()["participant"]["email"] == "alice.b@example.org"


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("hostile\u200bteam", "U+200B ZERO WIDTH SPACE"),
        ("abc\u202edef", "U+202E RIGHT-TO-LEFT OVERRIDE"),
        ("bell\u0007", "control character"),
        ("left\u2066right", "U+2066 LEFT-TO-RIGHT ISOLATE"),
        ("\ufeffteam", "U+FEFF ZERO WIDTH NO-BREAK SPACE"),
    ],
)
def test_names_that_hide_characters_are_refused(world: World, name: str, says: str) -> None:
    r = _register(world.client, name, "n@example.org")
    assert r.status_code == 422
    assert r.json()["detail"].startswith("team_name: ")
    assert says in r.json()["detail"]


def test_team_names_are_normalised_and_unique_by_what_they_look_like(world: World) -> None:
    first = _register(world.client, "  Hostile   Team ", "first@example.org")
    assert first.status_code == 201
    assert first.json()["team"]["name"] == "Hostile Team"
    for look_alike in ("hostile team", "Ноstile Team", "H0stile Team", "Ｈｏｓｔｉｌｅ Team", "Hostile Tearn"):
        r = _register(world.client, look_alike, f"{abs(hash(look_alike))}@example.org")
        assert r.status_code == 409, look_alike
        assert "looks like the existing team 'Hostile Team'" in r.json()["detail"]
    assert _register(world.client, "Hostile Team 2", "second@example.org").status_code == 201


@pytest.fixture
def strict_client(
    tmp_path: Any, database_url: str, session_factory: sessionmaker[Session], sent_tasks: list[Any]
) -> Iterator[TestClient]:
    """The API with the production throttle settings but for small, explicit windows."""
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        login_rate_per_address="5/minute",
        login_failures_per_account="3/15minutes",
        login_failures_per_account_address="3/15minutes",
        login_slowdown_s=0.1,
        registration_rate_per_address="2/hour",
    )
    with TestClient(create_app(settings, session_factory=session_factory)) as client:
        yield client


def test_logins_are_throttled_per_address_and_per_account(strict_client: TestClient) -> None:
    assert _register(strict_client, "Alice", "alice@example.org").status_code == 201
    codes = [
        strict_client.post("/api/v1/auth/login", json={"email": "alice@example.org", "password": "wrong-guess-1"})
        for _ in range(4)
    ]
    assert [r.status_code for r in codes] == [401, 401, 401, 429]
    refused = codes[-1]
    assert refused.json()["error"] == "too_many_requests"
    assert "failed logins for this account from your address" in refused.json()["detail"]
    assert 0 < int(refused.headers["Retry-After"]) <= 15 * 60
    # The right password does not get through either from this address while the pair is throttled.
    right = strict_client.post("/api/v1/auth/login", json={"email": "alice@example.org", "password": PASSWORD})
    assert right.status_code == 429
    # Per address: the sixth attempt of the minute is refused whatever the account.
    other = strict_client.post("/api/v1/auth/login", json={"email": "bob@example.org", "password": "x"})
    assert other.status_code == 429
    assert "login attempts from your address" in other.json()["detail"]


def test_failures_from_other_addresses_slow_the_owner_down_but_never_lock_them_out() -> None:
    throttle = Throttle(login_failures_per_account="10/15minutes", login_failures_per_account_address="10/15minutes")
    for index in range(10):
        address = f"203.0.113.{index % 3}"
        assert throttle.login_attempt(address=address, email="owner@example.org") == 0.0
        throttle.login_failed(email="owner@example.org", address=address)
    # 10 failures from elsewhere: the owner's own address is slowed down, not refused.
    assert throttle.login_attempt(address="198.51.100.7", email="owner@example.org") == throttle.slowdown_s > 0
    # Ten from one address: that (account, address) pair is refused, with the time to wait.
    for _ in range(10):
        throttle.login_attempt(address="192.0.2.1", email="victim@example.org")
        throttle.login_failed(email="victim@example.org", address="192.0.2.1")
    with pytest.raises(TooManyRequests, match="failed logins for this account from your address"):
        throttle.login_attempt(address="192.0.2.1", email="victim@example.org")
    assert throttle.login_attempt(address="192.0.2.2", email="victim@example.org") == throttle.slowdown_s


def test_registrations_are_throttled_per_address(strict_client: TestClient) -> None:
    assert _register(strict_client, "One", "one@example.org").status_code == 201
    assert _register(strict_client, "Two", "two@example.org").status_code == 201
    third = _register(strict_client, "Three", "three@example.org")
    assert third.status_code == 429
    assert int(third.headers["Retry-After"]) > 0


def test_password_hashes_run_a_bounded_number_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(throttle_module, "HASH_WAIT_S", 0.2)
    throttle = Throttle(max_concurrent_hashes=1)
    inside, release = threading.Event(), threading.Event()

    def hold() -> None:
        with throttle.hashing():
            inside.set()
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    assert inside.wait(5)
    with pytest.raises(TooManyRequests, match="busy checking passwords"):
        throttle.hashed(lambda: "second")
    release.set()
    holder.join()
    assert throttle.hashed(lambda: "third") == "third"
