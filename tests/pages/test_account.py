"""The account pages in-process (both database backends): register, log in and out, team and invitations,
joining, the submit page's guard; session cookie flags, CSRF and origin checks, and the API never taking the
cookie for a token."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

sys.path.insert(0, str(Path(__file__).parent))

from seed import Seeded

from app.main import create_app
from app.settings import Settings

PASSWORD = "correct horse battery"


@pytest.fixture
def app_settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=database_url)


@pytest.fixture
def browser(app_settings: Settings, session_factory: sessionmaker[Session]) -> Iterator[TestClient]:
    with TestClient(create_app(app_settings, session_factory=session_factory)) as c:
        yield c


def csrf_of(client: TestClient, path: str = "/register") -> str:
    page = client.get(path)
    match = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert match, page.text[:300]
    return match.group(1)


def register(client: TestClient, team: str, email: str) -> str:
    """Register through the page; returns the session cookie's value."""
    response = client.post(
        "/register",
        data={"team_name": team, "email": email, "password": PASSWORD, "csrf": csrf_of(client)},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text[:500]
    assert response.headers["location"] == "/team"
    return str(client.cookies.get("midog_session"))


def test_register_sets_a_safe_session_cookie_and_shows_the_team(browser: TestClient, seeded: Seeded) -> None:
    csrf = csrf_of(browser)
    response = browser.post(
        "/register",
        data={"team_name": "Web Team", "email": "web@example.org", "password": PASSWORD, "csrf": csrf},
        follow_redirects=False,
    )
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("midog_session=mdg_")
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    assert "Secure" not in cookie  # plain http here; see the https test below
    team = browser.get("/team")
    assert "Team Web Team" in team.text
    assert "web@example.org" in team.text
    assert 'action="/logout"' in team.text  # the header offers logging out


def test_over_https_the_cookies_are_secure(
    app_settings: Settings, session_factory: sessionmaker[Session], seeded: Seeded
) -> None:
    with TestClient(create_app(app_settings, session_factory=session_factory), base_url="https://testserver") as c:
        page = c.get("/register")
        assert "Secure" in page.headers["set-cookie"]  # the CSRF cookie
        assert page.headers["set-cookie"].startswith("__Host-midog_csrf=")
        assert "Path=/" in page.headers["set-cookie"]
        assert "Domain" not in page.headers["set-cookie"]
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        done = c.post(
            "/register",
            data={"team_name": "Secure Team", "email": "secure@example.org", "password": PASSWORD, "csrf": csrf},
            follow_redirects=False,
        )
        assert "Secure" in done.headers["set-cookie"]
        assert done.headers["set-cookie"].startswith("__Host-midog_session=mdg_")
        # Over https only the prefixed names count: a plain `midog_session` cookie is not a session.
        assert c.get("/team", follow_redirects=False).status_code == 200
        c.cookies.set("midog_session", str(c.cookies.get("__Host-midog_session")))
        del c.cookies["__Host-midog_session"]
        assert c.get("/team", follow_redirects=False).status_code == 303


def test_forms_without_the_csrf_value_or_from_another_site_are_refused(browser: TestClient, seeded: Seeded) -> None:
    csrf = csrf_of(browser)
    body = {"team_name": "Forged", "email": "forged@example.org", "password": PASSWORD}
    for data, headers in (
        (body, {}),
        ({**body, "csrf": "not-the-cookie"}, {}),
        ({**body, "csrf": csrf}, {"Origin": "https://evil.example"}),
    ):
        refused = browser.post("/register", data=data, headers=headers, follow_redirects=False)
        assert refused.status_code == 403
        assert "<h1>Refused</h1>" in refused.text
    assert browser.post("/register", data={**body, "csrf": csrf}, follow_redirects=False).status_code == 303


def test_errors_are_shown_beside_their_field(browser: TestClient, seeded: Seeded) -> None:
    csrf = csrf_of(browser)
    bad_email = browser.post(
        "/register", data={"team_name": "T1", "email": "no-at-sign", "password": PASSWORD, "csrf": csrf}
    )
    assert bad_email.status_code == 422
    assert 'id="f-email-error" role="alert">enter an e-mail address such as name@example.org' in bad_email.text
    assert 'aria-invalid="true" aria-describedby="f-email-error' in bad_email.text
    assert 'value="T1"' in bad_email.text  # what was typed stays
    weak = browser.post(
        "/register", data={"team_name": "T2", "email": "t2@example.org", "password": "password123", "csrf": csrf}
    )
    assert weak.status_code == 422
    assert 'id="f-password-error"' in weak.text
    register(browser, "Aurora Two", "a2@example.org")
    clash = TestClient(browser.app)
    look_alike = clash.post(
        "/register",
        data={"team_name": "Aurora", "email": "a3@example.org", "password": PASSWORD, "csrf": csrf_of(clash)},
    )
    assert look_alike.status_code == 409
    assert 'id="f-team_name-error"' in look_alike.text or 'id="form-error"' in look_alike.text


def test_login_logout_and_the_next_page(browser: TestClient, seeded: Seeded) -> None:
    register(browser, "Login Team", "login@example.org")
    old = browser.cookies.get("midog_session")
    browser.post("/logout", data={"csrf": csrf_of(browser, "/team")}, follow_redirects=False)
    fresh = TestClient(browser.app)
    fresh.cookies.set("midog_session", str(old))
    assert fresh.get("/team", follow_redirects=False).status_code == 303  # the token was revoked
    guest = TestClient(browser.app)
    assert guest.get("/team", follow_redirects=False).headers["location"] == "/login?next=/team"
    csrf = csrf_of(guest, "/login?next=/team")
    wrong = guest.post("/login", data={"email": "login@example.org", "password": "not it at all", "csrf": csrf})
    assert wrong.status_code == 401
    assert "wrong e-mail or password" in wrong.text
    for target, landing in (("/my/submissions", "/my/submissions"), ("//evil.example/x", "/team")):
        # Once signed in, the form's value is bound to the session: each login takes its page's value.
        csrf = csrf_of(guest, "/login")
        ok = guest.post(
            "/login",
            data={"email": "login@example.org", "password": PASSWORD, "csrf": csrf, "next": target},
            follow_redirects=False,
        )
        assert ok.headers["location"] == landing


def test_the_csrf_value_is_bound_to_the_session(browser: TestClient, seeded: Seeded) -> None:
    register(browser, "Bound Team", "bound@example.org")
    # A planted CSRF cookie with the same value in the form: refused on a signed-in session.
    planted = "z" * 43
    browser.cookies.set("midog_csrf", planted)
    refused = browser.post("/team/invitations", data={"email": "x@example.org", "csrf": planted})
    assert refused.status_code == 403
    # The value the page gives is an HMAC over the cookie keyed by the session, not the cookie itself.
    value = csrf_of(browser, "/team")
    assert value != planted
    assert len(value) == 64
    assert browser.post("/team/invitations", data={"email": "x@example.org", "csrf": value}).status_code == 201
    # Another session with the same CSRF cookie cannot use that value.
    other = TestClient(browser.app)
    register(other, "Other Team", "other-bound@example.org")
    other.cookies.set("midog_csrf", planted)
    assert other.post("/team/invitations", data={"email": "y@example.org", "csrf": value}).status_code == 403


def test_invite_and_join_through_the_pages(browser: TestClient, seeded: Seeded) -> None:
    register(browser, "Inviters", "boss@example.org")
    issued = browser.post("/team/invitations", data={"email": "mate@example.org", "csrf": csrf_of(browser, "/team")})
    assert issued.status_code == 201
    token = re.search(r'id="invitation-token" readonly value="([^"]+)"', issued.text).group(1)  # type: ignore[union-attr]
    assert f'href="/join?invitation={token}"' in issued.text
    mate = TestClient(browser.app)
    form = mate.get(f"/join?invitation={token}")
    assert f'value="{token}"' in form.text
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)  # type: ignore[union-attr]
    wrong_address = mate.post(
        "/join", data={"invitation": token, "email": "other@example.org", "password": PASSWORD, "csrf": csrf}
    )
    assert wrong_address.status_code == 409
    joined = mate.post(
        "/join",
        data={"invitation": token, "email": "mate@example.org", "password": PASSWORD, "csrf": csrf},
        follow_redirects=False,
    )
    assert joined.status_code == 303
    team = mate.get("/team").text
    assert "boss@example.org" in team
    assert "mate@example.org" in team
    assert "joined" in team


def test_the_api_never_takes_the_session_cookie(browser: TestClient, seeded: Seeded) -> None:
    cookie = register(browser, "Cookie Team", "cookie@example.org")
    assert browser.get("/api/v1/me").status_code == 401  # the cookie is sent, and ignored
    assert browser.get("/api/v1/me", headers={"Authorization": f"Bearer {cookie}"}).status_code == 200


def test_the_submit_page_needs_a_session_and_shows_the_quota(browser: TestClient, seeded: Seeded) -> None:
    guest = TestClient(browser.app)
    url = f"/phases/{seeded.public_phase_id}/submit"
    assert guest.get(url, follow_redirects=False).headers["location"] == f"/login?next={url}"
    token = register(browser, "Submitters", "submit@example.org")
    page = browser.get(url)
    assert page.status_code == 200
    assert 'id="quota"' in page.text
    quota = browser.get(f"/api/v1/phases/{seeded.public_phase_id}/quota", headers={"Authorization": f"Bearer {token}"})
    q = quota.json()
    today = "no daily limit" if q["daily_limit"] is None else f"{q['daily_remaining']} of {q['daily_limit']} left"
    assert f"<dt>Today</dt><dd>{today}" in page.text
    assert f"{q['active_evaluations']} of at most {q['max_active']}" in page.text
    assert re.search(rf'action="{url}\?kind=predictions&amp;csrf=[^"]+"', page.text)
    forged = browser.post(f"{url}?kind=predictions&csrf=nope", files={"file": ("p.json", b"{}")})
    assert forged.status_code == 403


def test_account_forms_are_bounded_like_the_apis_auth_routes(browser: TestClient, seeded: Seeded) -> None:
    csrf = csrf_of(browser)
    huge = {"team_name": "x" * 200_000, "email": "big@example.org", "password": PASSWORD, "csrf": csrf}
    for path in ("/register", "/login", "/join", "/organiser/login"):
        assert browser.post(path, data=huge).status_code == 413, path


def _queued_submission(db: Session, team_name: str, phase_id: int) -> int:
    """A submission of `team_name` waiting in the queue, as an upload leaves it."""
    from sqlalchemy import select

    from app.tables import Evaluation, Participant, Submission, SubmissionKind, Team

    team = db.scalars(select(Team).where(Team.name == team_name)).one()
    member = db.scalars(select(Participant).where(Participant.team_id == team.id)).first()
    submission = Submission(
        phase_id=phase_id, team=team, participant=member, kind=SubmissionKind.PREDICTIONS, file_path="x/p.json",
        original_filename="p.json", sha256="0" * 64, size_bytes=10,
    )  # fmt: skip
    db.add(submission)
    db.flush()
    db.add(Evaluation(submission=submission))
    db.commit()
    return submission.id


def test_a_team_is_renamed_only_before_its_first_submission(
    browser: TestClient, seeded: Seeded, db_session: Session
) -> None:
    register(browser, "First Name", "rename@example.org")
    csrf = csrf_of(browser, "/team")
    assert 'action="/team/name"' in browser.get("/team").text
    clash = browser.post("/team/name", data={"name": "Aurora", "csrf": csrf})
    assert clash.status_code == 409
    assert "looks like the existing team" in clash.text
    done = browser.post("/team/name", data={"name": "Second Name", "csrf": csrf}, follow_redirects=False)
    assert done.status_code == 303
    assert "Team Second Name" in browser.get("/team").text
    _queued_submission(db_session, "Second Name", seeded.public_phase_id)
    assert 'action="/team/name"' not in browser.get("/team").text
    late = browser.post("/team/name", data={"name": "Third Name", "csrf": csrf})
    assert late.status_code == 409
    assert "only before its first submission" in late.text


def test_a_queued_submission_is_cancelled_from_the_submissions_page(
    browser: TestClient, seeded: Seeded, db_session: Session
) -> None:
    register(browser, "Cancellers", "cancel@example.org")
    submission_id = _queued_submission(db_session, "Cancellers", seeded.public_phase_id)
    page = browser.get("/my/submissions").text
    assert f'action="/my/submissions/{submission_id}/cancel"' in page
    assert '<meta http-equiv="refresh"' in page  # followed live while it waits
    csrf = csrf_of(browser, "/my/submissions")
    done = browser.post(f"/my/submissions/{submission_id}/cancel", data={"csrf": csrf}, follow_redirects=False)
    assert done.status_code == 303
    after = browser.get("/my/submissions").text
    assert f'id="submission-{submission_id}" data-status="cancelled"' in after
    assert "cancelled by the team" in after
    again = browser.post(f"/my/submissions/{submission_id}/cancel", data={"csrf": csrf})
    assert again.status_code == 409
    assert "only a queued evaluation can be cancelled" in again.text
    other = seeded.submission_ids["Aurora"]  # another team's: not found, whatever its state
    assert browser.post(f"/my/submissions/{other}/cancel", data={"csrf": csrf}).status_code == 404


def test_container_phases_offer_a_model_tarball_and_show_logs_where_allowed(
    browser: TestClient, seeded: Seeded, db_session: Session
) -> None:
    from app.tables import Evaluation, EvaluationStatus, Phase, Submission, SubmissionKind

    phase = db_session.get(Phase, seeded.public_phase_id)
    assert phase is not None
    phase.allowed_kinds = ["predictions", "container"]
    db_session.commit()
    register(browser, "Containers", "containers@example.org")
    page = browser.get(f"/phases/{phase.id}/submit").text
    assert 'name="model" type="file"' in page
    assert 'name="image_submission"' in page
    assert 'name="run_mode"' in page
    assert "not shown in this phase" in page
    submission_id = _queued_submission(db_session, "Containers", phase.id)
    submission = db_session.get(Submission, submission_id)
    assert submission is not None
    submission.kind = SubmissionKind.CONTAINER
    submission.model_filename = "model.tar.gz"
    submission.model_sha256 = "a" * 64
    db_session.query(Evaluation).filter(Evaluation.submission_id == submission_id).update(
        {"status": EvaluationStatus.FAILED, "error_message": "case 101.tiff: the program failed"}
    )
    db_session.commit()
    hidden = browser.get("/my/submissions").text
    assert "Model tarball model.tar.gz" in hidden
    assert f"/my/submissions/{submission_id}/logs" not in hidden
    assert browser.get(f"/my/submissions/{submission_id}/logs").status_code == 403
    phase.show_logs = True
    db_session.commit()
    assert f'href="/my/submissions/{submission_id}/logs"' in browser.get("/my/submissions").text
    shown = browser.get(f"/my/submissions/{submission_id}/logs")
    assert shown.status_code == 200
    assert 'id="no-logs"' in shown.text
    assert "you can read each case" in browser.get(f"/phases/{phase.id}/submit").text
