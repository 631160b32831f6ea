"""Compute accounting and budgets (app.submissions.budget): GPU-seconds summed per team and phase; a phase's
gpu_budget_hours and team_share refuse model and container uploads once spent (403, one line saying which
budget, how much and what to do), allow them below, never refuse predictions; the organisers' compute report
shows spend per team and phase and what is queued. Both database backends (the `world` fixture)."""

from __future__ import annotations

import hashlib
from typing import Any

import httpx
import pytest
from api_helpers import World
from test_archive_uploads import image_tar, model_zip

from app.cli.client import ClientError, check
from app.tables import Evaluation, EvaluationStatus, Submission, SubmissionKind, Team


def _spent(
    world: World, team_name: str, seconds: float, *, status: EvaluationStatus = EvaluationStatus.SUCCEEDED
) -> None:
    """A finished evaluation of `team_name` in the world's phase that ran participant code for `seconds`."""
    team = world.db.query(Team).filter(Team.name == team_name).one()
    artifact = f"{team_name}-{seconds}".encode()
    submission = Submission(
        phase=world.phase,
        team=team,
        kind=SubmissionKind.MODEL,
        file_path=f"elsewhere/{hashlib.sha256(artifact).hexdigest()}.archive",
        sha256=hashlib.sha256(artifact).hexdigest(),
        size_bytes=len(artifact),
    )
    world.db.add(Evaluation(submission=submission, version=1, status=status, gpu_seconds=seconds))
    world.db.commit()


def _budget(world: World, **fields: Any) -> None:
    world.phase.allowed_kinds = ["predictions", "model", "container"]
    world.phase.daily_quota = None
    for key, value in fields.items():
        setattr(world.phase, key, value)
    world.db.commit()


def _submit_model(world: World, team: dict[str, Any]) -> httpx.Response:
    response: httpx.Response = world.submit(team["headers"], model_zip(), kind="model", filename="detector.zip")
    return response


def test_uploads_are_allowed_below_the_phase_budget_and_refused_once_it_is_spent(world: World) -> None:
    _budget(world, gpu_budget_hours=1.0)
    alpha, beta = world.register("Alpha"), world.register("Beta")
    _spent(world, "Alpha", 1800.0)
    _spent(world, "Beta", 1799.0)
    below = _submit_model(world, alpha)
    assert below.status_code == 201, below.text
    world.db.query(Evaluation).filter(Evaluation.submission_id == below.json()["id"]).update(
        {"status": EvaluationStatus.CANCELLED}
    )
    world.db.commit()
    _spent(world, "Beta", 1.0)  # 3600 s: the budget of 1 GPU-hour is spent
    for team in (alpha, beta):
        refused = _submit_model(world, team)
        assert refused.status_code == 403, refused.text
        line = refused.json()["detail"]
        assert "\n" not in line
        assert line.startswith("GPU budget of this phase spent: 1.00 of 1 GPU-hours used by all teams")
        assert "gpu_budget_hours" in line  # what to do
    container = world.submit(alpha["headers"], image_tar(), kind="container", filename="image.tar")
    assert container.status_code == 403, container.text
    assert container.json()["detail"] == line
    # predictions are scored on the cpu queue: no budget refuses them
    assert world.submit(alpha["headers"]).status_code == 201


def test_a_team_that_used_its_share_is_refused_while_others_may_still_run(world: World) -> None:
    _budget(world, gpu_budget_hours=2.0, team_share=0.25)  # 0.5 GPU-hours per team
    alpha, beta = world.register("Alpha"), world.register("Beta")
    _spent(world, "Alpha", 1799.0)
    _spent(world, "Beta", 60.0)
    below = _submit_model(world, alpha)
    assert below.status_code == 201, below.text
    world.db.query(Evaluation).filter(Evaluation.submission_id == below.json()["id"]).update(
        {"status": EvaluationStatus.CANCELLED}
    )
    world.db.commit()
    _spent(world, "Alpha", 1.0)  # 1800 s = 0.5 GPU-hours
    refused = _submit_model(world, alpha)
    assert refused.status_code == 403, refused.text
    line = refused.json()["detail"]
    assert line.startswith("your team's share of the GPU budget is spent: 0.50 of 0.5 GPU-hours (0.25 of 2) used")
    assert "team_share" in line
    # the CLI shows the same one line (app.cli.client.check)
    with pytest.raises(ClientError, match=r"^403: your team's share of the GPU budget is spent"):
        check(refused)
    assert _submit_model(world, beta).status_code == 201


def test_a_budget_counts_every_evaluation_of_the_phase_and_no_other(world: World) -> None:
    _budget(world, gpu_budget_hours=1.0)
    alpha = world.register("Alpha")
    other = world.add_phase("other", allowed_kinds=["predictions", "model"], daily_quota=None)
    _spent(world, "Alpha", 1000.0, status=EvaluationStatus.FAILED)  # a failed run used its GPU time too
    _spent(world, "Alpha", 2600.0)
    refused = _submit_model(world, alpha)
    assert refused.status_code == 403, refused.text
    allowed = world.submit(alpha["headers"], model_zip(), kind="model", filename="d.zip", phase_id=other.id)
    assert allowed.status_code == 201, allowed.text


def test_budgets_are_optional_validated_and_set_through_the_admin_api(world: World) -> None:
    url = f"/api/v1/admin/phases/{world.phase.id}"
    read = world.client.get("/api/v1/admin/challenges", headers=world.admin()).json()[0]["phases"][0]
    assert (read["gpu_class"], read["gpu_budget_hours"], read["team_share"]) == ("gpu", None, None)
    assert world.client.patch(url, headers=world.admin(), json={"team_share": 0.5}).status_code == 422
    for bad in ({"gpu_budget_hours": 0}, {"gpu_budget_hours": -1}, {"team_share": 1.5}, {"team_share": 0}):
        body = {"gpu_budget_hours": 10, **bad}
        assert world.client.patch(url, headers=world.admin(), json=body).status_code == 422, bad
    ok = world.client.patch(url, headers=world.admin(), json={"gpu_budget_hours": 10, "team_share": 0.2})
    assert ok.status_code == 200, ok.text
    assert (ok.json()["gpu_budget_hours"], ok.json()["team_share"]) == (10, 0.2)
    assert world.client.patch(url, headers=world.admin(), json={"gpu_budget_hours": None}).status_code == 422
    cleared = world.client.patch(url, headers=world.admin(), json={"gpu_budget_hours": None, "team_share": None})
    assert (cleared.json()["gpu_budget_hours"], cleared.json()["team_share"]) == (None, None)


def test_the_compute_report_shows_spend_per_team_and_phase_and_the_queue(world: World) -> None:
    _budget(world, gpu_budget_hours=1.0, team_share=0.5)
    world.register("Alpha")
    world.register("Beta")
    _spent(world, "Alpha", 1800.0)
    _spent(world, "Alpha", 900.0)
    _spent(world, "Beta", 0.0, status=EvaluationStatus.QUEUED)
    r = world.client.get("/api/v1/admin/compute", headers=world.admin())
    assert r.status_code == 200, r.text
    (phase,) = r.json()
    assert phase["phase"] == "midog/prelim"
    assert (phase["gpu_hours"], phase["budget_spent"], phase["queued"], phase["running"]) == (0.75, False, 1, 0)
    teams = {t["team_name"]: t for t in phase["teams"]}
    assert (teams["Alpha"]["gpu_hours"], teams["Alpha"]["limit_hours"], teams["Alpha"]["queued"]) == (0.75, 0.5, 0)
    assert (teams["Beta"]["gpu_hours"], teams["Beta"]["queued"]) == (0.0, 1)
    _spent(world, "Beta", 900.0)
    assert world.client.get("/api/v1/admin/compute", headers=world.admin()).json()[0]["budget_spent"] is True
