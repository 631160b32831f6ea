"""The hostile-input suite, second round: a careless organiser's bundles, a hostile participant's Track 2
files, accounts, forwarded headers, CSRF and tokens, each replayed against a live `midog-eval serve` with
the answer it must now give.

Two servers: the default configuration (no trusted proxy) for most probes, and one that trusts 127.0.0.1 as
its reverse proxy, so that the probes of several client addresses can be sent from this machine.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.classification_set import outputs, write_classification_set
from tests.live_server import REPO_ROOT, Server, running_server

pytestmark = pytest.mark.slow

CLI = [sys.executable, "-c", "from app.cli import main; main()"]
PASSWORD = "midog-test-passphrase"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("second-round")) as running:
        yield running


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("proxied"), MIDOG_TRUSTED_PROXIES="127.0.0.1") as running:
        yield running


def _register(server: Server, name: str, email: str) -> dict[str, str]:
    team = httpx.post(
        f"{server.base}/api/v1/auth/register",
        json={"team_name": name, "email": email, "password": PASSWORD},
        timeout=30,
    )
    assert team.status_code == 201, team.text
    return {"Authorization": f"Bearer {team.json()['token']['token']}"}


# --- bundles ---------------------------------------------------------------------------------------------


def _apply(server: Server, tmp_path: Path, text: str, *args: str) -> subprocess.CompletedProcess[str]:
    bundle = tmp_path / "challenge.yaml"
    bundle.write_text(text)
    token = server.organiser()["Authorization"].removeprefix("Bearer ")
    env = {**server.env, "MIDOG_TOKEN": token, "XDG_CONFIG_HOME": str(tmp_path / "config")}
    return subprocess.run(
        [*CLI, "admin", "apply", str(bundle), "--server", server.base, *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _one_line_exit_2(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def _state(server: Server) -> tuple[list[str], list[str]]:
    admin = server.organiser()
    challenges = httpx.get(f"{server.base}/api/v1/admin/challenges", headers=admin, timeout=30).json()
    sets = httpx.get(f"{server.base}/api/v1/admin/test-sets", headers=admin, timeout=30).json()
    return [c["slug"] for c in challenges], [t["name"] for t in sets]


def test_a_bundle_refused_at_its_second_phase_or_second_test_set_leaves_no_trace(
    server: Server, tmp_path: Path
) -> None:
    from tests.worker.conftest import build_set

    first = build_set(tmp_path / "set-one").root
    before = _state(server)
    dates = f"""version: 1
challenge: {{slug: atomic, title: Atomic, is_published: true}}
test_sets:
  - {{name: atomic-one, path: {first}}}
phases:
  - {{slug: p1, title: P1, test_set: atomic-one}}
  - {{slug: p2, title: P2, test_set: atomic-one, opens_at: "2030-02-01T00:00:00Z", closes_at: "2030-01-01T00:00:00Z"}}
"""
    refused = _apply(server, tmp_path, dates)
    line = _one_line_exit_2(refused)
    assert "p2" in line
    assert "nothing was changed" in line
    assert _state(server) == before
    paths = f"""version: 1
challenge: {{slug: atomic, title: Atomic}}
test_sets:
  - {{name: atomic-one, path: {first}}}
  - {{name: atomic-two, path: {tmp_path / "no-such-set"}}}
phases:
  - {{slug: p1, title: P1, test_set: atomic-one}}
"""
    line = _one_line_exit_2(_apply(server, tmp_path, paths))
    assert "atomic-two" in line
    assert _state(server) == before  # the first test set is not left registered
    # The same bundle, corrected, applies whole.
    fixed = paths.replace(f"  - {{name: atomic-two, path: {tmp_path / 'no-such-set'}}}\n", "")
    applied = _apply(server, tmp_path, fixed)
    assert applied.returncode == 0, applied.stderr
    slugs, names = _state(server)
    assert "atomic" in slugs
    assert "atomic-one" in names


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "".join(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}" if i else "x"] * 9) + "]\n" for i in range(9))
            + "version: 1\nchallenge: {slug: bomb, title: *a8}\n",
            "aliases (*a0) are not allowed",
        ),
        ("version: 1\nchallenge:\n  slug: deep\n  title: " + "[" * 5000 + "]" * 5000 + "\n", "nested more than"),
        (
            "version: 1\nchallenge:\n  slug: twice\n  title: T\n  is_published: false\n  is_published: true\n",
            "key 'is_published' is given twice (first on line 5)",
        ),
    ],
    ids=["nine-levels-of-nine-aliases", "nested-5000-deep", "key-given-twice"],
)
def test_a_hostile_bundle_is_refused_in_one_line_quickly(
    server: Server, tmp_path: Path, text: str, message: str
) -> None:
    started = time.monotonic()
    line = _one_line_exit_2(_apply(server, tmp_path, text, "--dry-run"))
    assert message in line
    assert "challenge.yaml:" in line
    assert time.monotonic() - started < 60  # the interpreter's start included; the read itself is immediate


# --- Track 2 predictions ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def track2(server: Server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = write_classification_set(tmp_path_factory.mktemp("track2") / "set")
    admin = server.organiser()
    with httpx.Client(base_url=server.base, timeout=60) as client:
        registered = client.post("/api/v1/admin/test-sets", json={"name": "t2", "path": str(root)}, headers=admin)
        assert registered.status_code == 201, registered.text
        challenge = client.post("/api/v1/admin/challenges", json={"slug": "t2", "title": "T2"}, headers=admin)
        phase = client.post(
            f"/api/v1/admin/challenges/{challenge.json()['id']}/phases",
            json={
                "slug": "atypical",
                "title": "Atypical",
                "test_set_id": registered.json()["id"],
                "daily_quota": None,
                "max_active_per_team": 100,
                "scoring_options": {"task": "classification", "bootstrap": 10},
            },
            headers=admin,
        )
        assert phase.status_code == 201, phase.text
    return {"phase": phase.json()["id"], "team": _register(server, "Track Two", "track2@example.org")}


def _submit_track2(server: Server, track2: dict[str, Any], content: bytes) -> httpx.Response:
    return httpx.post(
        f"{server.base}/api/v1/phases/{track2['phase']}/submissions",
        headers=track2["team"],
        files={"file": ("my-outputs.json", content)},
        timeout=300,
    )


def _good() -> dict[str, Any]:
    return outputs()


def _text(document: dict[str, Any]) -> str:
    return json.dumps(document)


def _stack_twice() -> bytes:
    good = _good()
    first = next(iter(good))
    body = _text(good)
    return (body[:-1] + f", {json.dumps(first)}: {json.dumps(good[first])}}}").encode()


def _class_twice() -> bytes:
    return _text(_good()).replace('"class": ', '"class": "normal", "class": ', 1).encode()


def _confidence(value: float) -> bytes:
    good = _good()
    first = next(iter(good))
    good[first][0]["confidence"] = value
    return _text(good).encode()


def _deep(levels: int) -> bytes:
    first = next(iter(_good()))
    return f'{{"{first}": '.encode() + b"[" * levels + b"]" * levels + b"}"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (_deep(100_000), "JSON nested too deeply"),
        (_deep(700_000), "JSON nested too deeply"),
        (_stack_twice(), "is given twice"),
        (_class_twice(), "key 'class' is given twice in one object"),
        (_confidence(7.5), "confidence must be a finite number in [0, 1]"),
        (_confidence(-0.5), "confidence must be a finite number in [0, 1]"),
    ],
    ids=["nested-100000", "nested-1.4-MB", "stack-twice", "class-twice", "confidence-7.5", "confidence-minus-0.5"],
)
def test_a_hostile_track2_file_is_refused_naming_the_participants_file(
    server: Server, track2: dict[str, Any], content: bytes, message: str
) -> None:
    response = _submit_track2(server, track2, content)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert message in detail
    assert detail.startswith("my-outputs.json: ")
    assert "upload-" not in detail
    assert str(server.data_dir) not in detail
    assert httpx.get(f"{server.base}/api/v1/health", timeout=10).json()["status"] == "ok"


def test_a_track2_file_with_a_byte_order_mark_is_accepted(server: Server, track2: dict[str, Any]) -> None:
    response = _submit_track2(server, track2, b"\xef\xbb\xbf" + _text(_good()).encode())
    assert response.status_code == 201, response.text


# --- accounts --------------------------------------------------------------------------------------------


def test_ten_wrong_passwords_from_elsewhere_do_not_lock_the_owner_out(proxied: Server) -> None:
    _register(proxied, "Owner Team", "owner@example.org")
    url = f"{proxied.base}/api/v1/auth/login"
    codes = [
        httpx.post(
            url,
            json={"email": "owner@example.org", "password": f"guess-{i}-xxxxxxxx"},
            headers={"X-Forwarded-For": f"203.0.113.{i}"},
            timeout=60,
        ).status_code
        for i in range(10)
    ]
    assert codes == [401] * 10
    owner = httpx.post(
        url,
        json={"email": "owner@example.org", "password": PASSWORD},
        headers={"X-Forwarded-For": "198.51.100.7"},
        timeout=60,
    )
    assert owner.status_code == 200, owner.text


def test_forwarded_headers_are_not_believed_without_a_trusted_proxy(server: Server) -> None:
    codes = [
        httpx.post(
            f"{server.base}/api/v1/auth/login",
            json={"email": "nobody@example.org", "password": f"guess-{i}-xxxxxxxx"},
            headers={"X-Forwarded-For": f"203.0.113.{i}"},
            timeout=60,
        ).status_code
        for i in range(25)
    ]
    assert set(codes) <= {401, 429}
    assert 429 in codes  # every attempt counted for 127.0.0.1, whatever the header says


def test_invitations_answer_the_same_for_registered_addresses_once_each_and_throttled(server: Server) -> None:
    from app.auth.service import INVITATIONS_PER_TEAM_PER_HOUR

    _register(server, "Known Team", "known@example.org")
    team = _register(server, "Inviting Team", "inviting@example.org")
    url = f"{server.base}/api/v1/teams/me/invitations"
    registered = httpx.post(url, headers=team, json={"email": "known@example.org"}, timeout=30)
    unknown = httpx.post(url, headers=team, json={"email": "unknown@example.org"}, timeout=30)
    assert registered.status_code == unknown.status_code == 201
    assert set(registered.json()) == set(unknown.json())
    assert httpx.post(url, headers=team, json={"email": "unknown@example.org"}, timeout=30).status_code == 409
    codes = [
        httpx.post(url, headers=team, json={"email": f"many-{i}@example.org"}, timeout=30).status_code
        for i in range(INVITATIONS_PER_TEAM_PER_HOUR)
    ]
    assert codes.count(201) == INVITATIONS_PER_TEAM_PER_HOUR - 2  # two were sent above
    assert codes[-2:] == [429, 429]


def test_a_planted_csrf_cookie_does_not_pass_on_a_signed_in_session(server: Server) -> None:
    with httpx.Client(base_url=server.base, timeout=30) as browser:
        page = browser.get("/register")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        done = browser.post(
            "/register",
            data={"team_name": "Cookie Team", "email": "cookie@example.org", "password": PASSWORD, "csrf": csrf},
        )
        assert done.status_code in (200, 303), done.text[:300]
        browser.cookies.set("midog_csrf", "z")
        planted = browser.post("/team/invitations", data={"email": "x@example.org", "csrf": "z"})
        assert planted.status_code == 403
        browser.cookies.set("midog_csrf", "z" * 43)
        planted = browser.post("/team/invitations", data={"email": "x@example.org", "csrf": "z" * 43})
        assert planted.status_code == 403


# --- tokens ----------------------------------------------------------------------------------------------


def test_create_token_is_audited_and_no_token_outlives_the_maximum_lifetime(server: Server, tmp_path: Path) -> None:
    done = subprocess.run(
        [*CLI, "admin", "create-token", "--name", "audited"],
        env=server.env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    token_id = int(re.search(r"organiser token (\d+)", done.stderr).group(1))  # type: ignore[union-attr]
    admin = server.organiser()
    events = httpx.get(f"{server.base}/api/v1/admin/audit", headers=admin, timeout=30).json()
    assert any(e["action"] == "create_api_token" and e["target_id"] == token_id for e in events), events[:3]
    far = httpx.post(
        f"{server.base}/api/v1/admin/tokens",
        headers=admin,
        json={"scope": "organiser", "expires_at": "9999-12-31T00:00:00Z"},
        timeout=30,
    )
    assert far.status_code == 422
    assert "maximum token lifetime" in far.json()["detail"]
    too_long = subprocess.run(
        [*CLI, "admin", "create-token", "--expires-days", "4000"],
        env=server.env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert too_long.returncode == 2
    assert "maximum token lifetime" in too_long.stderr
