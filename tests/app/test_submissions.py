"""Submitting: storage and enqueue after commit, phase windows, gating, approval, quotas (U6), one active
evaluation, upload limits (U1), magic bytes, predictions validation (U4), own-team listing, SSE."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from api_helpers import CASES, World, bearer, predictions
from sqlalchemy import select

from app.queue import task_sender
from app.settings import Settings
from app.tables import Evaluation, EvaluationStatus, Submission, TokenScope, utcnow


def test_submission_is_stored_committed_and_enqueued_by_name(
    world: World, settings: Settings, sent_tasks: list[Any]
) -> None:
    team = world.register("Alpha")
    content = predictions()
    r = world.submit(team["headers"], content, data={"method_name": "RetinaNet", "paper_url": "https://x.org/p"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["evaluation"]["status"] == "queued"
    assert body["sha256"] == hashlib.sha256(content).hexdigest()
    assert body["method_name"] == "RetinaNet"
    assert sent_tasks == [("evaluation.run", {"evaluation_id": body["evaluation"]["id"]}, "cpu")]
    row = world.db.get(Submission, body["id"])
    assert row is not None
    stored = settings.storage_path / row.file_path
    assert stored.read_bytes() == content
    assert stored.suffix == ".json"
    assert list((settings.storage_path / "tmp").iterdir()) == []


def test_csv_predictions_are_accepted_and_stored_as_csv(world: World, settings: Settings) -> None:
    team = world.register("Alpha")
    lines = ["image,x,y,z,probability,name"] + [f"{c['name']},0.05,0.05,0,0.9,mitotic figure" for c in CASES]
    r = world.submit(team["headers"], ("\n".join(lines) + "\n").encode(), filename="p.csv")
    assert r.status_code == 201, r.text
    row = world.db.get(Submission, r.json()["id"])
    assert row is not None
    assert row.file_path.endswith(".csv")


def test_broker_outage_never_loses_the_submission(world: World) -> None:
    def broken(name: str, kwargs: dict[str, int], queue: str) -> None:
        raise ConnectionError("broker down")

    team = world.register("Alpha")
    with task_sender(broken):
        r = world.submit(team["headers"])
    assert r.status_code == 201
    ev = world.db.get(Evaluation, r.json()["evaluation"]["id"])
    assert ev is not None
    assert ev.status is EvaluationStatus.QUEUED


def test_nothing_is_sent_when_the_transaction_fails(world: World, sent_tasks: list[Any]) -> None:
    team = world.register("Alpha")
    world.phase.daily_quota = 0
    world.db.commit()
    assert world.submit(team["headers"]).status_code == 429
    assert sent_tasks == []


@pytest.mark.parametrize(
    ("opens", "closes"),
    [(-10, -1), (1, 10)],
    ids=["closed", "not-yet-open"],
)
def test_phase_outside_its_window_is_403(world: World, opens: int, closes: int) -> None:
    team = world.register("Alpha")
    world.phase.opens_at = utcnow() + timedelta(days=opens)
    world.phase.closes_at = utcnow() + timedelta(days=closes)
    world.db.commit()
    r = world.submit(team["headers"])
    assert r.status_code == 403
    assert r.json()["error"] == "phase_closed"


def test_gating_requires_a_successful_parent_submission(world: World) -> None:
    final = world.add_phase(
        "final",
        parent_phase_id=world.phase.id,
        opens_at=utcnow() - timedelta(days=1),
        closes_at=utcnow() + timedelta(days=1),
    )
    team = world.register("Alpha")
    r = world.submit(team["headers"], phase_id=final.id)
    assert r.status_code == 403
    assert "gated" in r.json()["detail"]
    first = world.submit(team["headers"]).json()
    world.finish(first["id"], status=EvaluationStatus.FAILED)
    assert world.submit(team["headers"], phase_id=final.id).status_code == 403
    second = world.submit(team["headers"]).json()
    world.finish(second["id"])
    assert world.submit(team["headers"], phase_id=final.id).status_code == 201


def test_challenge_requiring_approval(world: World) -> None:
    world.challenge.requires_approval = True
    world.db.commit()
    team = world.register("Alpha")
    assert world.submit(team["headers"]).status_code == 403
    r = world.client.patch(
        f"/api/v1/admin/teams/{team['team']['id']}", headers=world.admin(), json={"is_approved": True}
    )
    assert r.status_code == 200
    assert world.submit(team["headers"]).status_code == 201


def test_daily_quota_is_shared_by_team_members_and_429_names_the_reset(world: World) -> None:
    world.phase.daily_quota = 2
    world.phase.max_active_per_team = 10
    world.db.commit()
    team = world.register("Alpha")
    member_headers = world.join(team, "m@example.org")["headers"]
    assert world.submit(team["headers"]).status_code == 201
    assert world.submit(member_headers).status_code == 201
    r = world.submit(member_headers)
    assert r.status_code == 429
    body = r.json()
    assert body["error"] == "quota_exceeded"
    tomorrow = (utcnow() + timedelta(days=1)).date().isoformat()
    assert body["reset_at"].startswith(tomorrow)
    assert int(r.headers["Retry-After"]) > 0
    quota = world.client.get(f"/api/v1/phases/{world.phase.id}/quota", headers=team["headers"]).json()
    assert quota["daily_used"] == 2
    assert quota["daily_remaining"] == 0
    # another team is not affected
    other = world.register("Beta")
    assert world.submit(other["headers"]).status_code == 201


def test_phase_quota(world: World) -> None:
    world.phase.daily_quota = None
    world.phase.phase_quota = 1
    world.phase.max_active_per_team = 10
    world.db.commit()
    team = world.register("Alpha")
    assert world.submit(team["headers"]).status_code == 201
    r = world.submit(team["headers"])
    assert r.status_code == 429
    assert r.json()["reset_at"] is not None


@pytest.mark.parametrize("failed_count", [True, False])
def test_failed_submissions_count_per_phase_setting(world: World, failed_count: bool) -> None:
    world.phase.daily_quota = 1
    world.phase.failed_count_towards_quota = failed_count
    world.db.commit()
    team = world.register("Alpha")
    first = world.submit(team["headers"]).json()
    world.finish(first["id"], status=EvaluationStatus.FAILED)
    assert world.submit(team["headers"]).status_code == (429 if failed_count else 201)


def test_an_infrastructure_failure_never_spends_quota(world: World) -> None:
    """Even where failed submissions count, a failure of the platform (sandbox missing, retries exhausted)
    gives the submission back; the same failure blamed on the submission does not."""
    world.phase.daily_quota = 1
    world.phase.failed_count_towards_quota = True
    world.db.commit()
    team = world.register("Alpha")
    first = world.submit(team["headers"]).json()
    ev = world.finish(first["id"], status=EvaluationStatus.FAILED)
    ev.infrastructure_failure = True
    world.db.commit()
    quota = world.client.get(f"/api/v1/phases/{world.phase.id}/quota", headers=team["headers"]).json()
    assert quota["daily_used"] == 0
    second = world.submit(team["headers"])
    assert second.status_code == 201
    world.finish(second.json()["id"], status=EvaluationStatus.FAILED)
    assert world.submit(team["headers"]).status_code == 429


def test_one_active_evaluation_per_team(world: World) -> None:
    team = world.register("Alpha")
    first = world.submit(team["headers"]).json()
    r = world.submit(team["headers"])
    assert r.status_code == 409
    assert r.json()["error"] == "conflict"
    world.finish(first["id"])
    assert world.submit(team["headers"]).status_code == 201


def test_kind_not_allowed_and_magic_bytes(world: World) -> None:
    team = world.register("Alpha")
    r = world.submit(team["headers"], b"PK\x03\x04zip", kind="model", filename="m.zip")
    assert r.status_code == 422
    assert "not accepted" in r.json()["detail"]
    world.phase.allowed_kinds = ["predictions", "model"]
    world.db.commit()
    r = world.submit(team["headers"], predictions(), kind="model", filename="m.zip")
    assert r.status_code == 422
    assert "zip or tar" in r.json()["detail"]
    r = world.submit(team["headers"], b"\x89PNG\r\n\x1a\n\x00\x00", filename="p.json")
    assert r.status_code == 422
    # Zip magic alone is not enough: the archive itself is checked (tests/app/test_archive_uploads.py).
    r = world.submit(team["headers"], b"PK\x03\x04" + b"\x00" * 100, kind="model", filename="m.zip")
    assert r.status_code == 422
    assert r.json()["error"] == "invalid_archive"


def _points(name: str, pts: list[Any]) -> dict[str, Any]:
    body: dict[str, Any] = {
        c["name"]: {"type": "Multiple points", "points": [{"point": [0.05, 0.05, 0]}]} for c in CASES
    }
    body[name] = {"type": "Multiple points", "points": pts}
    return body


BAD_FILES: dict[str, tuple[bytes, str]] = {
    "nan": (
        json.dumps(_points("002.tiff", [{"point": [0.05, 0.05, 0]}]))
        .replace('0.05, 0.05, 0]}]}, "003', 'NaN, 0.05, 0]}]}, "003')
        .encode(),
        "NaN",
    ),
    "outside-image": (
        json.dumps(_points("002.tiff", [{"point": [0.05, 0.05, 0]}, {"point": [0.3, 0.1, 0]}])).encode(),
        "'002.tiff': point 1",
    ),
    "unknown-image": (json.dumps({**_points("001.tiff", []), "999.tiff": {"points": []}}).encode(), "999.tiff"),
    "missing-case": (
        json.dumps({k: v for k, v in _points("001.tiff", []).items() if k != "003.tiff"}).encode(),
        "003.tiff",
    ),
    "two-numbers": (json.dumps(_points("001.tiff", [{"point": [0.05, 0.05]}])).encode(), "'001.tiff': point 0"),
    "probability": (
        json.dumps(_points("003.tiff", [{"point": [0.05, 0.05, 0], "probability": 1.5}])).encode(),
        "'003.tiff': point 0",
    ),
    "string-coordinate": (json.dumps(_points("001.tiff", [{"point": ["1", 0.05, 0]}])).encode(), "'001.tiff'"),
    "deep-nesting": (b'{"001.tiff": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", ""),
    "not-an-object": (b'{"001.tiff": 5, "002.tiff": 5, "003.tiff": 5}', "001.tiff"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_invalid_predictions_are_422_naming_case_and_point(world: World, settings: Settings, case: str) -> None:
    content, expected = BAD_FILES[case]
    team = world.register("Alpha")
    r = world.submit(team["headers"], content, filename="preds.json")
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["error"] in {"invalid_predictions", "invalid_input"}
    assert expected in body["detail"]
    assert str(settings.storage_path) not in body["detail"]  # no server paths in messages
    assert world.db.scalar(select(Submission.id)) is None
    assert list((settings.storage_path / "tmp").iterdir()) == []


def test_too_many_points_are_refused_before_parsing(world: World, settings: Settings) -> None:
    settings.max_total_points = 1000
    team = world.register("Alpha")
    many = ",".join(['{"point":[0.01,0.01,0]}'] * 5000)
    content = ('{"001.tiff":{"points":[' + many + ']},"002.tiff":{"points":[]},"003.tiff":{"points":[]}}').encode()
    r = world.submit(team["headers"], content)
    assert r.status_code == 422
    assert "more than 1000 points" in r.json()["detail"]


def test_content_length_over_the_limit_is_413(world: World, settings: Settings) -> None:
    settings.max_predictions_bytes = 10_000
    team = world.register("Alpha")
    big = b"{" + b" " * 200_000 + b"}"
    r = world.submit(team["headers"], big)
    assert r.status_code == 413
    assert r.json()["error"] == "payload_too_large"
    assert not (settings.storage_path / "tmp").exists() or list((settings.storage_path / "tmp").iterdir()) == []


def test_chunked_upload_over_the_limit_is_413_and_the_temp_file_removed(world: World, settings: Settings) -> None:
    settings.max_predictions_bytes = 10_000
    team = world.register("Alpha")
    boundary = "b0undary"

    def body() -> Iterator[bytes]:
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="p.json"\r\n'
            "Content-Type: application/json\r\n\r\n{"
        ).encode()
        for _ in range(50):
            yield b" " * 1000
        yield f"}}\r\n--{boundary}--\r\n".encode()

    r = world.client.post(
        f"/api/v1/phases/{world.phase.id}/submissions",
        headers={**team["headers"], "Content-Type": f"multipart/form-data; boundary={boundary}"},
        content=body(),
    )
    assert r.status_code == 413
    assert list((settings.storage_path / "tmp").iterdir()) == []


def test_non_multipart_body_is_415(world: World) -> None:
    team = world.register("Alpha")
    r = world.client.post(f"/api/v1/phases/{world.phase.id}/submissions", headers=team["headers"], json={"a": 1})
    assert r.status_code == 415


def test_teams_see_only_their_own_submissions(world: World) -> None:
    alpha = world.register("Alpha")
    beta = world.register("Beta")
    sub = world.submit(alpha["headers"]).json()
    assert world.client.get(f"/api/v1/submissions/{sub['id']}", headers=beta["headers"]).status_code == 404
    assert world.client.get("/api/v1/submissions", headers=beta["headers"]).json() == []
    mine = world.client.get("/api/v1/submissions", headers=alpha["headers"]).json()
    assert [s["id"] for s in mine] == [sub["id"]]


def test_results_and_failures_reach_the_team_without_organiser_details(world: World) -> None:
    team = world.register("Alpha")
    sub = world.submit(team["headers"]).json()
    world.finish(sub["id"], status=EvaluationStatus.FAILED)
    r = world.client.get(f"/api/v1/submissions/{sub['id']}", headers=team["headers"])
    assert r.json()["evaluation"]["error_message"] == "time limit exceeded"
    assert "secret organiser detail" not in r.text
    sub2 = world.submit(team["headers"]).json()
    world.finish(sub2["id"], f1=0.75)
    body = world.client.get(f"/api/v1/submissions/{sub2['id']}", headers=team["headers"]).json()
    assert body["result"]["f1"] == 0.75
    assert set(body["result"]["groups"]) == {"A", "B"}
    assert "cases" not in body["result"]
    assert "001.tiff" not in json.dumps(body)


def test_sse_stream_reports_status_until_finished(world: World) -> None:
    team = world.register("Alpha")
    sub = world.submit(team["headers"]).json()
    world.finish(sub["id"])
    with world.client.stream("GET", f"/api/v1/submissions/{sub['id']}/events", headers=team["headers"]) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        text = "".join(r.iter_text())
    events = [block for block in text.split("\n\n") if block.strip()]
    assert events[0].startswith("event: status")
    assert json.loads(events[0].split("data: ", 1)[1])["status"] == "succeeded"
    assert events[-1].startswith("event: end")


def test_sse_of_a_queued_submission_ends_at_the_time_limit(world: World, settings: Settings) -> None:
    settings.sse_max_duration_s = 0.2
    team = world.register("Alpha")
    sub = world.submit(team["headers"]).json()
    with world.client.stream("GET", f"/api/v1/submissions/{sub['id']}/events", headers=team["headers"]) as r:
        text = "".join(r.iter_text())
    assert '"status": "queued"' in text
    assert "event: end" not in text


def test_sse_ends_soon_after_its_token_stops_being_valid(world: World, settings: Settings) -> None:
    """A stream opened with a token that expires (or is revoked) ends at the next recheck, not after an hour."""
    import time

    from app.auth.service import create_token
    from app.tables import Participant

    settings.sse_max_duration_s = 30.0
    settings.sse_token_recheck_s = 0.1
    team = world.register("Alpha")
    sub = world.submit(team["headers"]).json()
    participant = world.db.get(Participant, team["participant"]["id"])
    short = create_token(
        world.db, scope=TokenScope.PARTICIPANT, participant=participant, expires_at=utcnow() + timedelta(seconds=1)
    )
    world.db.commit()
    started = time.monotonic()
    with world.client.stream("GET", f"/api/v1/submissions/{sub['id']}/events", headers=bearer(short.token)) as r:
        text = "".join(r.iter_text())
    assert '"status": "queued"' in text
    assert "token revoked or expired" in text
    assert time.monotonic() - started < 10


def test_stored_files_never_use_client_names(world: World, settings: Settings, tmp_path: Path) -> None:
    team = world.register("Alpha")
    r = world.submit(team["headers"], filename="../../etc/evil.json")
    assert r.status_code == 201
    row = world.db.get(Submission, r.json()["id"])
    assert row is not None
    assert "evil" not in row.file_path
    assert row.original_filename == "evil.json"


def test_a_stored_file_goes_with_a_rolled_back_transaction(db_session: Any, tmp_path: Path) -> None:
    from app.storage import move_into_storage

    kept, dropped = tmp_path / "kept.part", tmp_path / "dropped.part"
    kept.write_text("a")
    dropped.write_text("b")
    move_into_storage(db_session, kept, tmp_path / "storage" / "kept.json")
    db_session.commit()
    move_into_storage(db_session, dropped, tmp_path / "storage" / "dropped.json")
    with db_session.begin_nested():  # a savepoint of the same request that succeeds changes nothing
        pass
    db_session.rollback()
    db_session.rollback()  # a second rollback has nothing left to remove
    assert (tmp_path / "storage" / "kept.json").read_text() == "a"
    assert not (tmp_path / "storage" / "dropped.json").exists()
    assert not dropped.exists()
