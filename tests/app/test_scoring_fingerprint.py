"""Results are ranked only beside results scored the same way: a scoring change is refused or re-versions the
board; every result says how it was produced (admin API, JSON and CSV exports, submission page)."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from api_helpers import World, write_test_set

from app.leaderboard.rebuilds import request_rebuild
from app.scoring import canonical_options, fingerprint
from app.tables import EvaluationStatus, Phase, TestSet


def _board(world: World) -> dict[str, Any]:
    r = world.client.get(f"/api/v1/phases/{world.phase.id}/leaderboard")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _scored_board(world: World) -> dict[str, Any]:
    """Two teams with a result each under the phase's current scoring."""
    for name, f1 in (("Alpha", 0.8), ("Beta", 0.6)):
        team = world.register(name)
        world.finish(world.submit(team["headers"]).json()["id"], f1=f1)
    board = _board(world)
    assert [e["team_name"] for e in board["entries"]] == ["Alpha", "Beta"]
    return board


def _patch(world: World, body: dict[str, Any], **params: str) -> Any:
    return world.client.patch(f"/api/v1/admin/phases/{world.phase.id}", json=body, params=params, headers=world.admin())


def test_a_rules_change_on_a_phase_with_results_is_refused_and_changes_nothing(world: World) -> None:
    before = _scored_board(world)
    r = _patch(world, {"scoring_options": {"rules": "midog2021"}})
    assert r.status_code == 409, r.text
    detail = r.json()["detail"]
    assert "scoring_options.rules" in detail
    assert "2 submission(s) scored" in detail
    assert "reevaluate=true" in detail
    world.db.expire_all()
    phase = world.db.get(Phase, world.phase.id)
    assert phase is not None
    assert canonical_options(phase.scoring_options)["rules"] == "midog2022"
    assert phase.evaluation_version == 1
    assert _board(world) == before


def test_confirmed_rules_change_re_versions_the_board_and_never_mixes_old_and_new(
    world: World, sent_tasks: list[Any]
) -> None:
    before = _scored_board(world)
    sent_tasks.clear()
    r = _patch(world, {"scoring_options": {"rules": "midog2021"}}, reevaluate="true")
    assert r.status_code == 200, r.text
    phase = r.json()
    assert phase["evaluation_version"] == 2
    assert phase["scoring_options"]["rules"] == "midog2021"
    assert phase["scoring_options"]["bootstrap"] == world.phase.scoring_options.get("bootstrap", 1000)  # kept
    assert phase["scoring_fingerprint"] not in (None, before["scoring_fingerprint"])
    assert sorted(t[0] for t in sent_tasks) == ["evaluation.run", "evaluation.run", "standings.rebuild"]

    board = _board(world)
    assert board["evaluation_version"] == 2
    assert board["scoring_fingerprint"] == phase["scoring_fingerprint"]
    assert board["entries"] == []  # the old results are stored, but never shown beside new ones
    progress = world.client.get(f"/api/v1/admin/phases/{world.phase.id}/progress", headers=world.admin()).json()
    assert progress == {
        "phase_id": world.phase.id,
        "evaluation_version": 2,
        "scoring_fingerprint": phase["scoring_fingerprint"],
        "scoring_current": True,
        "submissions": 2,
        "by_status": {"queued": 2},
        "ranked": 0,
        "not_started": 0,
    }

    alpha = before["entries"][0]["submission_id"]
    world.finish(alpha, f1=0.7)  # the new version's result, under the new fingerprint
    board = _board(world)
    assert [(e["team_name"], e["f1"]) for e in board["entries"]] == [("Alpha", 0.7)]
    assert board["entries"][0]["scoring_fingerprint"] == phase["scoring_fingerprint"]
    progress = world.client.get(f"/api/v1/admin/phases/{world.phase.id}/progress", headers=world.admin()).json()
    assert (progress["by_status"], progress["ranked"]) == ({"queued": 1, "succeeded": 1}, 1)


def test_a_test_set_change_is_refused_while_results_exist_and_free_before(world: World, tmp_path: Path) -> None:
    other = TestSet(
        name="other",
        manifest_path=str(write_test_set(tmp_path / "other") / "manifest.json"),
        manifest_sha256="1" * 64,
        scoring_digest="1" * 64,
        case_count=world.test_set.case_count,
        cases=world.test_set.cases,
    )
    world.db.add(other)
    world.db.commit()
    empty = world.add_phase("empty")
    r = world.client.patch(f"/api/v1/admin/phases/{empty.id}", json={"test_set_id": other.id}, headers=world.admin())
    assert r.status_code == 200, r.text  # nothing scored yet: nothing to mix
    assert r.json()["scoring_fingerprint"] == fingerprint(empty.scoring_options, "1" * 64)
    assert r.json()["evaluation_version"] == 1

    _scored_board(world)
    r = _patch(world, {"test_set_id": other.id})
    assert r.status_code == 409
    assert "test_set_id" in r.json()["detail"]


def test_options_that_never_change_a_score_change_freely(world: World) -> None:
    before = _scored_board(world)
    r = _patch(world, {"scoring_options": {"shard_by": "scanner", "hidden": False}})
    assert r.status_code == 200, r.text
    assert r.json()["evaluation_version"] == 1
    assert r.json()["scoring_fingerprint"] == before["scoring_fingerprint"]
    assert [e["team_name"] for e in _board(world)["entries"]] == ["Alpha", "Beta"]


def test_a_result_scored_differently_is_kept_for_its_team_but_never_ranked(world: World) -> None:
    alpha = world.register("Alpha")
    sub = world.submit(alpha["headers"]).json()
    world.finish(sub["id"], f1=0.9)
    world.db.expire_all()
    phase = world.db.get(Phase, world.phase.id)
    assert phase is not None
    # as a worker running another scorer version would have stored it
    from app.tables import Result

    result = world.db.query(Result).filter_by(submission_id=sub["id"]).one()
    result.scoring_fingerprint = fingerprint(phase.scoring_options, world.test_set.scoring_digest, "0-older")
    request_rebuild(world.db, [phase.id])  # the worker's lifecycle.succeed would have asked for it
    world.db.commit()
    assert _board(world)["entries"] == []
    mine = world.client.get(f"/api/v1/submissions/{sub['id']}", headers=alpha["headers"]).json()
    assert mine["result"]["f1"] == 0.9
    assert mine["result"]["ranked"] is False


def test_provenance_in_the_admin_api_the_exports_and_the_submission_page(world: World) -> None:
    board = _scored_board(world)
    entry = board["entries"][0]
    fingerprint_now = world.phase.scoring_fingerprint
    assert board["scoring_fingerprint"] == fingerprint_now
    # JSON export: everything but the worker's host and process
    assert entry["provenance"]["scorer_version"] == "1"
    assert entry["provenance"]["submission"]["sha256"] == "5" * 64
    assert "worker" not in entry["provenance"]["runtime"]
    # admin API: all of it
    full = world.client.get(f"/api/v1/admin/submissions/{entry['submission_id']}", headers=world.admin()).json()
    assert full["result"]["provenance"]["runtime"]["worker"] == "test-host:1"
    assert full["result"]["ranked"] is True
    assert full["evaluations"][0]["result"]["scoring_fingerprint"] == fingerprint_now
    # CSV exports
    rows = list(csv.DictReader(io.StringIO(world.client.get(f"/api/v1/phases/{world.phase.id}/leaderboard.csv").text)))
    assert {r["scoring_fingerprint"] for r in rows} == {fingerprint_now}
    assert rows[0]["submission_sha256"] == "5" * 64
    admin_csv = world.client.get(f"/api/v1/admin/phases/{world.phase.id}/results.csv", headers=world.admin()).text
    assert {r["scoring_fingerprint"] for r in csv.DictReader(io.StringIO(admin_csv))} == {fingerprint_now}
    # pages
    page = world.client.get(f"/phases/{world.phase.id}/leaderboard").text
    assert f'title="{fingerprint_now}"' in page
    page = world.client.get(f"/submissions/{entry['submission_id']}").text
    assert 'id="provenance"' in page
    assert fingerprint_now[:12] in page
    assert ("5" * 64)[:12] in page
    assert "test-host" not in page


def test_an_evaluation_that_never_succeeded_blocks_nothing(world: World) -> None:
    team = world.register("Alpha")
    world.finish(world.submit(team["headers"]).json()["id"], status=EvaluationStatus.FAILED)
    r = _patch(world, {"scoring_options": {"radius_mm": 0.01}})
    assert r.status_code == 200, r.text
    assert r.json()["evaluation_version"] == 1
