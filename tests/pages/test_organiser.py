"""The organisers' dashboard in-process (both database backends): sign-in with an organiser token only,
submissions with status, failure line and provenance, worker health, and re-run / disqualify behind a
confirmation page, each recorded in the audit log; read-only tokens see no action and cannot act."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

sys.path.insert(0, str(Path(__file__).parent))

from seed import Seeded
from test_account import csrf_of, register

from app.auth.service import create_token
from app.main import create_app
from app.settings import Settings
from app.tables import AuditEvent, Evaluation, EvaluationStatus, Submission, TokenScope


@pytest.fixture
def browser(
    tmp_path: Path, database_url: str, session_factory: sessionmaker[Session], inline_rebuilds: list[Any]
) -> Iterator[TestClient]:
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url)
    with TestClient(create_app(settings, session_factory=session_factory)) as c:
        yield c


def _token(db: Session, scope: TokenScope = TokenScope.ORGANISER) -> str:
    issued = create_token(db, scope=scope, name="dashboard test")
    db.commit()
    return issued.token


def _sign_in(client: TestClient, token: str) -> None:
    done = client.post(
        "/organiser/login", data={"token": token, "csrf": csrf_of(client, "/organiser/login")}, follow_redirects=False
    )
    assert done.status_code == 303, done.text[:300]
    assert done.headers["location"] == "/organiser"


def _fail(db: Session, submission_id: int, line: str) -> None:
    evaluation = db.scalars(select(Evaluation).where(Evaluation.submission_id == submission_id)).one()
    evaluation.status = EvaluationStatus.FAILED
    evaluation.error_message = line
    db.commit()


def test_only_organiser_tokens_open_the_dashboard(browser: TestClient, seeded: Seeded, db_session: Session) -> None:
    assert browser.get("/organiser", follow_redirects=False).headers["location"] == "/organiser/login"
    register(browser, "Curious", "curious@example.org")  # a participant session
    assert browser.get("/organiser", follow_redirects=False).status_code == 303
    wrong = browser.post("/organiser/login", data={"token": "mdg_nope", "csrf": csrf_of(browser, "/organiser/login")})
    assert wrong.status_code == 401
    assert "not a valid organiser token" in wrong.text
    participant_token = str(browser.cookies.get("midog_session"))
    refused = browser.post(
        "/organiser/login", data={"token": participant_token, "csrf": csrf_of(browser, "/organiser/login")}
    )
    assert refused.status_code == 401


def test_the_dashboard_shows_status_failures_provenance_and_workers(
    browser: TestClient, seeded: Seeded, db_session: Session
) -> None:
    cirrus = seeded.submission_ids["Cirrus"]
    _fail(db_session, cirrus, "the model archive produced no detections directory")
    _sign_in(browser, _token(db_session))
    page = browser.get("/organiser").text
    row = re.search(rf'<tr id="submission-{cirrus}" data-status="failed">(.*?)</tr>', page, re.S)
    assert row, page[:2000]
    assert "the model archive produced no detections directory" in row.group(1)
    aurora = re.search(rf'<tr id="submission-{seeded.submission_ids["Aurora"]}"[^>]*>(.*?)</tr>', page, re.S)
    assert aurora
    assert "scorer 1" in aurora.group(1)
    assert "seed-host:1" in aurora.group(1)  # the worker that produced it
    assert 'id="workers"' in page
    assert re.search(r'id="queue">.*failed: <strong>\d+</strong>', page, re.S)


def test_re_run_asks_first_then_queues_and_is_audited(browser: TestClient, seeded: Seeded, db_session: Session) -> None:
    cirrus = seeded.submission_ids["Cirrus"]
    _fail(db_session, cirrus, "out of memory")
    _sign_in(browser, _token(db_session))
    confirm = browser.get(f"/organiser/submissions/{cirrus}/requeue")
    assert confirm.status_code == 200
    assert "Re-run submission" in confirm.text
    assert 'id="confirm"' in confirm.text
    assert db_session.scalar(select(Evaluation.status).where(Evaluation.submission_id == cirrus)) == "failed"
    csrf = re.search(r'name="csrf" value="([^"]+)"', confirm.text).group(1)  # type: ignore[union-attr]
    assert browser.post(f"/organiser/submissions/{cirrus}/requeue", data={}).status_code == 403  # no CSRF value
    done = browser.post(f"/organiser/submissions/{cirrus}/requeue", data={"csrf": csrf}, follow_redirects=False)
    assert done.status_code == 303
    db_session.expire_all()
    statuses = db_session.scalars(select(Evaluation.status).where(Evaluation.submission_id == cirrus)).all()
    assert EvaluationStatus.QUEUED in statuses
    event = db_session.scalars(select(AuditEvent).order_by(AuditEvent.id.desc())).first()
    assert event is not None
    assert event.details.get("via") == "dashboard"
    assert event.details.get("action") == "requeue"
    again = browser.get(f"/organiser/submissions/{cirrus}/requeue").text
    assert 'id="not-possible"' in again  # its evaluation is active now


def test_disqualify_takes_an_entry_off_the_board(browser: TestClient, seeded: Seeded, db_session: Session) -> None:
    aurora = seeded.submission_ids["Aurora"]
    _sign_in(browser, _token(db_session))
    csrf = csrf_of(browser, f"/organiser/submissions/{aurora}/disqualify")
    browser.post(f"/organiser/submissions/{aurora}/disqualify", data={"csrf": csrf})
    assert db_session.get(Submission, aurora) is not None
    db_session.expire_all()
    assert db_session.get(Submission, aurora).is_disqualified is True  # type: ignore[union-attr]
    board = browser.get(f"/api/v1/phases/{seeded.public_phase_id}/leaderboard").json()
    assert aurora not in [e["submission_id"] for e in board["entries"]]


def test_read_only_tokens_see_no_action_and_cannot_act(
    browser: TestClient, seeded: Seeded, db_session: Session
) -> None:
    _sign_in(browser, _token(db_session, TokenScope.ORGANISER_READ))
    page = browser.get("/organiser").text
    assert "may only read" in page
    assert "/requeue" not in page
    cirrus = seeded.submission_ids["Cirrus"]
    csrf = csrf_of(browser, "/organiser/login")
    refused = browser.post(f"/organiser/submissions/{cirrus}/requeue", data={"csrf": csrf}, follow_redirects=False)
    assert refused.headers["location"] == "/organiser/login"


def test_the_domain_report_opens_from_the_dashboard(browser: TestClient, seeded: Seeded, db_session: Session) -> None:
    from app.tables import TestSet

    test_set = db_session.scalars(select(TestSet)).first()
    assert test_set is not None
    url = f"/organiser/test-sets/{test_set.id}/domain-report"
    assert browser.get(url, follow_redirects=False).headers["location"] == "/organiser/login"
    _sign_in(browser, _token(db_session))
    assert f'href="{url}"' in browser.get("/organiser").text
    missing = browser.get(url)
    assert missing.status_code == 404  # the seeded set lives nowhere on disk: the page says what to run
    assert "midog-eval dataset report" in missing.text


def test_the_dashboard_lists_phase_options_and_opens_a_runs_logs(
    browser: TestClient, seeded: Seeded, db_session: Session, tmp_path: Path
) -> None:
    from app.storage import evaluation_logs_dir
    from app.tables import SubmissionKind

    cirrus = seeded.submission_ids["Cirrus"]
    _fail(db_session, cirrus, "case 101.tiff: the program failed")
    submission = db_session.get(Submission, cirrus)
    assert submission is not None
    submission.kind = SubmissionKind.CONTAINER
    db_session.commit()
    evaluation = db_session.scalars(select(Evaluation).where(Evaluation.submission_id == cirrus)).one()
    logs = evaluation_logs_dir(Settings(data_dir=tmp_path / "data").storage_path, evaluation.id)
    logs.mkdir(parents=True)
    (logs / "101.tiff.log").write_text("Traceback\nModuleNotFoundError: No module named 'timm'\n<script>")
    url = f"/organiser/submissions/{cirrus}/logs"
    assert browser.get(url, follow_redirects=False).headers["location"] == "/organiser/login"
    _sign_in(browser, _token(db_session))
    page = browser.get("/organiser").text
    assert 'id="phases"' in page
    assert "organisers only" in page  # the seeded phases are hidden test sets: logs off by default
    assert f'href="{url}"' in page
    shown = browser.get(url)
    assert shown.status_code == 200
    assert "ModuleNotFoundError: No module named &#39;timm&#39;" in shown.text
    assert "&lt;script&gt;" in shown.text  # escaped, as everything a participant's program printed
    assert "case 101.tiff: the program failed" in shown.text
