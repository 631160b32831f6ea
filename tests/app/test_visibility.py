"""U7: while a phase hides scores, no endpoint gives a participant or the public scores, timings, logs or
per-image results; organisers see everything; scores appear once a hidden-until-close phase closes."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from api_helpers import World

from app.tables import EvaluationStatus, LeaderboardVisibility, utcnow

SECRET_F1 = 0.123456789


def _hidden_world(world: World, visibility: LeaderboardVisibility) -> tuple[dict[str, str], int, int]:
    world.phase.leaderboard_visibility = visibility
    world.phase.max_active_per_team = 5
    world.db.commit()
    team = world.register("Alpha")
    ok = world.submit(team["headers"]).json()["id"]
    world.finish(ok, f1=SECRET_F1)
    failed = world.submit(team["headers"]).json()["id"]
    world.finish(failed, status=EvaluationStatus.FAILED)
    return team["headers"], ok, failed


def _texts(world: World, headers: dict[str, str], ok: int, failed: int) -> list[str]:
    p = world.phase.id
    out = []
    for path in (
        f"/api/v1/phases/{p}/leaderboard",
        f"/api/v1/phases/{p}/leaderboard.csv",
        f"/api/v1/submissions/{ok}",
        f"/api/v1/submissions/{failed}",
        "/api/v1/submissions",
        f"/api/v1/submissions/{ok}/events",
        f"/api/v1/phases/{p}",
        "/api/v1/challenges",
    ):
        for h in (headers, {}):
            r = world.client.get(path, headers=h)
            out.append(r.text)
    return out


def test_hidden_until_close_exposes_no_scores(world: World) -> None:
    headers, ok, failed = _hidden_world(world, LeaderboardVisibility.HIDDEN_UNTIL_CLOSE)
    texts = _texts(world, headers, ok, failed)
    for text in texts:
        assert "0.1234" not in text
        assert "secret organiser detail" not in text
        assert "001.tiff" not in text
        assert "Traceback" not in text
    own = world.client.get(f"/api/v1/submissions/{ok}", headers=headers).json()
    assert own["scores_hidden"] is True
    assert own["result"] is None
    assert own["evaluation"]["status"] == "succeeded"
    assert own["evaluation"]["started_at"] is None
    assert own["evaluation"]["gpu_seconds"] is None
    board = world.client.get(f"/api/v1/phases/{world.phase.id}/leaderboard").json()
    assert board["scores_visible"] is False
    assert board["entries"] == []
    # organisers see it
    admin_board = world.client.get(f"/api/v1/phases/{world.phase.id}/leaderboard", headers=world.admin()).json()
    assert admin_board["entries"][0]["f1"] == pytest.approx(SECRET_F1)
    admin_sub = world.client.get(f"/api/v1/admin/submissions/{failed}", headers=world.admin()).json()
    assert "secret organiser detail" in json.dumps(admin_sub)


def test_private_leaderboard_hides_the_board_but_not_a_teams_own_result(world: World) -> None:
    headers, ok, _failed = _hidden_world(world, LeaderboardVisibility.PRIVATE)
    board = world.client.get(f"/api/v1/phases/{world.phase.id}/leaderboard", headers=headers).json()
    assert board["entries"] == []
    assert "0.1234" not in world.client.get(f"/api/v1/phases/{world.phase.id}/leaderboard.csv").text
    own = world.client.get(f"/api/v1/submissions/{ok}", headers=headers).json()
    assert own["result"]["f1"] == pytest.approx(SECRET_F1)


def test_scores_appear_when_a_hidden_phase_closes(world: World) -> None:
    headers, ok, _failed = _hidden_world(world, LeaderboardVisibility.HIDDEN_UNTIL_CLOSE)
    world.phase.closes_at = utcnow() - timedelta(seconds=1)
    world.db.commit()
    board = world.client.get(f"/api/v1/phases/{world.phase.id}/leaderboard").json()
    assert board["scores_visible"] is True
    assert board["entries"][0]["f1"] == pytest.approx(SECRET_F1)
    assert world.client.get(f"/api/v1/submissions/{ok}", headers=headers).json()["result"] is not None
