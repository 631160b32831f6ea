"""Organiser API: challenges and phases, test sets from a server path, tokens, requeue/cancel, re-evaluation."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from api_helpers import World, bearer, write_test_set

from app.tables import Evaluation, EvaluationStatus, Phase, Result, WorkerNode, utcnow


def test_create_challenge_phase_and_test_set(world: World, tmp_path: Path) -> None:
    root = write_test_set(tmp_path / "set2")
    r = world.client.post("/api/v1/admin/test-sets", headers=world.admin(), json={"name": "set2", "path": str(root)})
    assert r.status_code == 201, r.text
    test_set_id = r.json()["id"]
    assert r.json()["case_count"] == 3
    r = world.client.post(
        "/api/v1/admin/challenges", headers=world.admin(), json={"slug": "midog-2026", "title": "MIDOG 2026"}
    )
    assert r.status_code == 201
    challenge_id = r.json()["id"]
    assert (
        world.client.post(
            "/api/v1/admin/challenges", headers=world.admin(), json={"slug": "midog-2026", "title": "again"}
        ).status_code
        == 409
    )
    body = {
        "slug": "final",
        "title": "Final",
        "kind": "final",
        "test_set_id": test_set_id,
        "allowed_kinds": ["predictions", "container"],
        "leaderboard_visibility": "hidden_until_close",
        "daily_quota": 1,
    }
    # Containers need a running worker that can run them; the gpu worker here says why it cannot.
    add_worker(world, "gpu@a", kinds=["model"], problems={"container": "podman not installed"})
    r = world.client.post(f"/api/v1/admin/challenges/{challenge_id}/phases", headers=world.admin(), json=body)
    assert r.status_code == 422
    assert "container" in r.json()["detail"]
    assert "gpu@a: podman not installed" in r.json()["detail"]
    add_worker(world, "gpu@b", kinds=["model", "container"])
    r = world.client.post(f"/api/v1/admin/challenges/{challenge_id}/phases", headers=world.admin(), json=body)
    assert r.status_code == 201, r.text
    phase = r.json()
    assert phase["is_open"] is True
    r = world.client.patch(f"/api/v1/admin/phases/{phase['id']}", headers=world.admin(), json={"daily_quota": 3})
    assert r.json()["daily_quota"] == 3
    public = world.client.get("/api/v1/challenges/midog-2026").json()
    assert [p["slug"] for p in public["phases"]] == ["final"]
    r = world.client.patch(f"/api/v1/admin/phases/{phase['id']}", headers=world.admin(), json={"title": None})
    assert r.status_code == 422


def add_worker(
    world: World,
    name: str,
    *,
    kinds: list[str],
    problems: dict[str, str] | None = None,
    seen_s_ago: float = 0.0,
    stopped: bool = False,
) -> WorkerNode:
    """A worker's self-report, as worker.heartbeat writes it."""
    seen = utcnow() - timedelta(seconds=seen_s_ago)
    row = WorkerNode(
        name=name,
        hostname=name.split("@")[-1],
        pid=1,
        queues="gpu",
        capabilities={"kinds": kinds, "problems": problems or {}, "allowed_missing_controls": []},
        started_at=seen,
        last_seen_at=seen,
        stopped_at=seen if stopped else None,
    )
    world.db.add(row)
    world.db.commit()
    return row


def test_a_phase_accepts_participant_code_only_while_a_worker_can_run_it(world: World) -> None:
    url = f"/api/v1/admin/phases/{world.phase.id}"
    r = world.client.patch(url, headers=world.admin(), json={"allowed_kinds": ["predictions", "model"]})
    assert r.status_code == 422
    assert "no gpu-queue worker is running" in r.json()["detail"]
    add_worker(world, "gpu@stale", kinds=["model"], seen_s_ago=3600)
    add_worker(world, "gpu@stopped", kinds=["model"], stopped=True)
    assert world.client.patch(url, headers=world.admin(), json={"allowed_kinds": ["model"]}).status_code == 422
    add_worker(world, "gpu@live", kinds=["model"])
    r = world.client.patch(url, headers=world.admin(), json={"allowed_kinds": ["predictions", "model"]})
    assert r.status_code == 200, r.text
    listed = {w["name"]: w for w in world.client.get("/api/v1/admin/workers", headers=world.admin()).json()}
    assert {n: w["alive"] for n, w in listed.items()} == {"gpu@live": True, "gpu@stale": False, "gpu@stopped": False}
    assert listed["gpu@live"]["kinds"] == ["model"]
    # A phase that already accepts models keeps them when something else changes, worker or not.
    world.db.query(WorkerNode).delete()
    world.db.commit()
    assert world.client.patch(url, headers=world.admin(), json={"daily_quota": 2}).status_code == 200


def test_health_is_degraded_while_a_worker_is_down(world: World) -> None:
    assert world.client.get("/api/v1/health").json() == {"status": "ok", "database": "ok", "workers": []}
    add_worker(world, "gpu@a", kinds=["model"])
    add_worker(world, "cpu@a", kinds=["predictions"], stopped=True)  # stopped on purpose: not listed
    health = world.client.get("/api/v1/health").json()
    assert health["status"] == "ok"
    assert [(w["name"], w["alive"]) for w in health["workers"]] == [("gpu@a", True)]
    add_worker(world, "gpu@b", kinds=["model"], seen_s_ago=120)
    health = world.client.get("/api/v1/health").json()
    assert health["status"] == "degraded"
    assert [(w["name"], w["alive"]) for w in health["workers"]] == [("gpu@a", True), ("gpu@b", False)]


def test_test_set_registration_is_validated(world: World, tmp_path: Path) -> None:
    root = write_test_set(tmp_path / "broken")
    (root / "images" / "002.tiff").unlink()
    r = world.client.post("/api/v1/admin/test-sets", headers=world.admin(), json={"name": "b", "path": str(root)})
    assert r.status_code == 422
    assert "002.tiff" in r.json()["detail"]
    root = write_test_set(tmp_path / "gt-mismatch")
    (root / "ground-truth" / "ground-truth.json").write_text(json.dumps({"001.tiff": []}))
    r = world.client.post("/api/v1/admin/test-sets", headers=world.admin(), json={"name": "c", "path": str(root)})
    assert r.status_code == 422
    r = world.client.post(
        "/api/v1/admin/test-sets", headers=world.admin(), json={"name": "d", "path": str(tmp_path / "nowhere")}
    )
    assert r.status_code == 422


def test_organiser_creates_tokens_shown_once(world: World) -> None:
    r = world.client.post("/api/v1/admin/tokens", headers=world.admin(), json={"scope": "organiser", "name": "ci"})
    assert r.status_code == 201
    token = r.json()["token"]
    assert world.client.get("/api/v1/admin/teams", headers=bearer(token)).status_code == 200
    listed = world.client.get("/api/v1/admin/tokens", headers=world.admin()).text
    assert token not in listed
    team = world.register("Alpha")
    r = world.client.post(
        "/api/v1/admin/tokens",
        headers=world.admin(),
        json={"scope": "participant", "participant_id": team["participant"]["id"]},
    )
    assert world.client.get("/api/v1/me", headers=bearer(r.json()["token"])).json()["team"]["name"] == "Alpha"
    assert (
        world.client.post("/api/v1/admin/tokens", headers=world.admin(), json={"scope": "participant"}).status_code
        == 422
    )


def test_cancel_requeue_and_reevaluate_enqueue_after_commit(world: World, sent_tasks: list[Any]) -> None:
    team = world.register("Alpha")
    sub = world.submit(team["headers"]).json()
    ev_id = sub["evaluation"]["id"]
    sent_tasks.clear()
    assert world.client.post(f"/api/v1/admin/submissions/{sub['id']}/requeue", headers=world.admin()).status_code == 409
    r = world.client.post(f"/api/v1/admin/submissions/{sub['id']}/cancel", headers=world.admin())
    assert r.status_code == 200
    assert r.json()["evaluation"]["status"] == "cancelled"
    assert world.client.post(f"/api/v1/admin/submissions/{sub['id']}/cancel", headers=world.admin()).status_code == 409
    r = world.client.post(f"/api/v1/admin/submissions/{sub['id']}/requeue", headers=world.admin())
    assert r.status_code == 200
    assert r.json()["evaluation"]["status"] == "queued"
    assert sent_tasks == [("evaluation.run", {"evaluation_id": ev_id}, "cpu")]
    world.finish(sub["id"])
    sent_tasks.clear()
    r = world.client.post(f"/api/v1/admin/phases/{world.phase.id}/reevaluate", headers=world.admin())
    assert r.json() == {
        "phase_id": world.phase.id,
        "evaluation_version": 2,
        "scoring_fingerprint": world.phase.scoring_fingerprint,
        "queued": 1,
    }
    world.db.expire_all()
    new = world.db.query(Evaluation).filter_by(submission_id=sub["id"], version=2).one()
    assert new.status is EvaluationStatus.QUEUED
    # the new version's board is empty until its results land: rebuilt once, as a queued task
    assert sent_tasks == [
        ("evaluation.run", {"evaluation_id": new.id}, "cpu"),
        ("standings.rebuild", {"phase_id": world.phase.id}, "cpu"),
    ]
    detail = world.client.get(f"/api/v1/admin/submissions/{sub['id']}", headers=world.admin()).json()
    assert [e["version"] for e in detail["evaluations"]] == [1, 2]
    assert detail["evaluations"][0]["result"]["cases"]["001.tiff"] == {"tp": 3, "fp": 1, "fn": 1}


def test_requeue_keeps_the_result_on_the_board_until_the_new_one_lands(world: World) -> None:
    """R14: the team stays on the leaderboard while its submission is re-run; the new result replaces the old."""
    from app import lifecycle as transitions

    team = world.register("Alpha")
    sub = world.submit(team["headers"]).json()
    ev = world.finish(sub["id"], f1=0.5)
    board = f"/api/v1/phases/{world.phase.id}/leaderboard"
    assert [e["f1"] for e in world.client.get(board).json()["entries"]] == [0.5]

    r = world.client.post(f"/api/v1/admin/submissions/{sub['id']}/requeue", headers=world.admin())
    assert r.status_code == 200
    assert r.json()["evaluation"]["status"] == "queued"
    assert r.json()["result"]["f1"] == 0.5
    assert [e["f1"] for e in world.client.get(board).json()["entries"]] == [0.5]

    # The re-run: claimed, then finished with a new result, in one transaction each, as the worker does.
    world.db.expire_all()
    claim = transitions.claim(world.db, evaluation_id=ev.id, owner="test:1", lease_s=60, max_attempts=3)
    assert claim.claimed
    world.db.commit()
    assert [e["f1"] for e in world.client.get(board).json()["entries"]] == [0.5]
    scores = {
        "tp": 9,
        "fp": 1,
        "fn": 1,
        "precision": 0.9,
        "recall": 0.9,
        "f1": 0.9,
        "ap": 0.8,
        "groups": {},
        "cases": {},
    }
    assert transitions.succeed(world.db, evaluation_id=ev.id, owner="test:1", attempt=claim.attempt, scores=scores)
    world.db.commit()
    assert [e["f1"] for e in world.client.get(board).json()["entries"]] == [0.9]
    world.db.expire_all()
    assert len(world.db.query(Result).filter_by(submission_id=sub["id"]).all()) == 1


def test_requeue_can_discard_the_result_at_once(world: World) -> None:
    team = world.register("Alpha")
    sub = world.submit(team["headers"]).json()
    world.finish(sub["id"])
    r = world.client.post(
        f"/api/v1/admin/submissions/{sub['id']}/requeue", params={"discard_result": True}, headers=world.admin()
    )
    assert r.status_code == 200
    assert r.json()["result"] is None
    assert r.json()["evaluations"][0]["result"] is None
    assert world.client.get(f"/api/v1/phases/{world.phase.id}/leaderboard").json()["entries"] == []


def test_scoring_options_are_validated_stored_and_read_back(world: World) -> None:
    url = f"/api/v1/admin/phases/{world.phase.id}"
    options = {"rules": "midog2021", "bootstrap": 0, "shard_by": "scanner", "hidden": False, "input_layout": "2021"}
    r = world.client.patch(url, headers=world.admin(), json={"scoring_options": options})
    assert r.status_code == 200, r.text
    read = r.json()["scoring_options"]
    assert {k: read[k] for k in options} == options
    assert read["radius_mm"] == 0.0075  # unset keys keep their defaults
    world.db.refresh(world.phase)
    assert world.phase.scoring_options["rules"] == "midog2021"  # what worker.tasks reads
    for bad in ({"rules": "midog2030"}, {"bootstrap": -1}, {"radius_mm": 0}, {"typo_key": 1}):
        r = world.client.patch(url, headers=world.admin(), json={"scoring_options": bad})
        assert r.status_code == 422, bad
        assert r.json()["error"]


def test_a_worker_gone_for_good_can_be_forgotten(world: World) -> None:
    add_worker(world, "gpu@gone", kinds=["model"], seen_s_ago=600)
    assert world.client.get("/api/v1/health").json()["status"] == "degraded"
    r = world.client.delete("/api/v1/admin/workers/gpu@gone", headers=world.admin())
    assert r.status_code == 204, r.text
    assert world.client.get("/api/v1/health").json()["status"] == "ok"
    assert world.client.delete("/api/v1/admin/workers/gpu@gone", headers=world.admin()).status_code == 404


def test_the_organiser_api_is_strict(world: World) -> None:
    """Unknown fields, gating cycles are 422; null quotas mean unlimited on create and update alike."""
    url = f"/api/v1/admin/phases/{world.phase.id}"
    r = world.client.patch(url, headers=world.admin(), json={"dailyquota": 3})
    assert r.status_code == 422
    assert r.json()["detail"].startswith("body.dailyquota: unknown field")
    r = world.client.post(
        f"/api/v1/admin/challenges/{world.challenge.id}/phases",
        headers=world.admin(),
        json={"slug": "final", "title": "Final", "daily_quota": None, "phase_quota": None},
    )
    assert r.status_code == 201, r.text
    final = r.json()
    assert (final["daily_quota"], final["phase_quota"]) == (None, None)
    world.db.expire_all()
    assert world.db.get(Phase, final["id"]).daily_quota is None
    assert world.client.patch(url, headers=world.admin(), json={"daily_quota": None}).json()["daily_quota"] is None
    # A gates final, final gates A: both would be locked for everyone.
    r = world.client.patch(
        f"/api/v1/admin/phases/{final['id']}", headers=world.admin(), json={"parent_phase_id": world.phase.id}
    )
    assert r.status_code == 200
    r = world.client.patch(url, headers=world.admin(), json={"parent_phase_id": final["id"]})
    assert r.status_code == 422
    assert "gated" in r.json()["detail"]


def test_seen_groups_name_test_set_groups_and_leave_one_unseen(world: World) -> None:
    """A phase's seen groups must be groups of its test set (the error names the unknown one and lists the
    set's), must leave a group unseen, and reach the leaderboard as seen/unseen columns once set."""
    url = f"/api/v1/admin/phases/{world.phase.id}"
    r = world.client.patch(url, headers=world.admin(), json={"seen_groups": ["Z"]})
    assert r.status_code == 422
    assert "seen_groups: 'Z' not among the 'scanner' groups of test set" in r.json()["detail"]
    assert "(A, B)" in r.json()["detail"]
    r = world.client.patch(url, headers=world.admin(), json={"seen_groups": ["A", "B"]})
    assert r.status_code == 422
    assert "leave at least one unseen" in r.json()["detail"]
    r = world.client.patch(url, headers=world.admin(), json={"seen_groups": ["A"]})
    assert r.status_code == 200, r.text
    assert r.json()["seen_groups"] == ["A"]
    assert world.client.get(f"/api/v1/challenges/{world.phase.challenge.slug}").json()["phases"][0]["seen_groups"] == [
        "A"
    ]
    r = world.client.patch(url, headers=world.admin(), json={"seen_groups": None})
    assert r.json()["seen_groups"] is None


def test_the_domain_report_page_is_served_to_organisers_once_written(world: World) -> None:
    url = f"/api/v1/admin/test-sets/{world.test_set.id}/domain-report"
    missing = world.client.get(url, headers=world.admin())
    assert missing.status_code == 404
    directory = Path(world.test_set.manifest_path).parent
    assert f"midog-eval dataset report {directory} --out {directory / 'domain-report'}" in missing.json()["detail"]
    (directory / "domain-report").mkdir()
    css = "body { font-family: sans-serif; }"
    (directory / "domain-report" / "index.html").write_text(f"<!DOCTYPE html><style>{css}</style><h1>Domain</h1>")
    page = world.client.get(url, headers=world.admin())
    assert page.status_code == 200
    assert "<h1>Domain</h1>" in page.text
    assert page.headers["content-type"].startswith("text/html")
    digest = base64.b64encode(hashlib.sha256(css.encode()).digest()).decode()
    assert page.headers["content-security-policy"].startswith(f"default-src 'none'; style-src 'sha256-{digest}'")
    participant = world.register("Curious Team")
    assert world.client.get(url, headers=participant["headers"]).status_code == 403
    assert world.client.get(url).status_code == 401
    assert world.client.get("/api/v1/admin/test-sets/999/domain-report", headers=world.admin()).status_code == 404


def test_logs_follow_hidden_by_default_and_run_mode_is_a_phase_option(world: World) -> None:
    """show_logs defaults to off for a hidden test set and on for public cases; both options are stored,
    changed by PATCH, never nulled, and readable by everyone in the phase listing."""
    url = f"/api/v1/admin/challenges/{world.challenge.id}/phases"
    base = {"test_set_id": world.test_set.id, "allowed_kinds": ["predictions"]}
    made = {}
    for slug, extra in (
        ("hidden-set", {}),
        ("sanity", {"scoring_options": {"hidden": False}}),
        ("told", {"scoring_options": {"hidden": False}, "show_logs": False, "run_mode": "invoke"}),
    ):
        r = world.client.post(url, headers=world.admin(), json={"slug": slug, "title": slug, **base, **extra})
        assert r.status_code == 201, r.text
        made[slug] = r.json()
    assert {s: (p["show_logs"], p["run_mode"]) for s, p in made.items()} == {
        "hidden-set": (False, "exec"),
        "sanity": (True, "exec"),
        "told": (False, "invoke"),
    }
    phase_url = f"/api/v1/admin/phases/{made['hidden-set']['id']}"
    r = world.client.patch(phase_url, headers=world.admin(), json={"show_logs": True, "run_mode": "invoke"})
    assert r.status_code == 200, r.text
    assert (r.json()["show_logs"], r.json()["run_mode"]) == (True, "invoke")
    for bad in ({"show_logs": None}, {"run_mode": None}, {"run_mode": "serve"}):
        r = world.client.patch(phase_url, headers=world.admin(), json=bad)
        assert r.status_code == 422, bad
        assert next(iter(bad)) in r.json()["detail"]
    listed = world.client.get(f"/api/v1/challenges/{world.challenge.slug}").json()["phases"]
    assert {p["slug"]: p["show_logs"] for p in listed}["hidden-set"] is True
