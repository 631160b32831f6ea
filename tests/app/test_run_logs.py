"""Run logs: organisers read every submission's kept log tails; the team only where the phase's show_logs is
on (a hidden test phase gives the failure line and nothing else); a listing is bounded, one case is whole."""

from __future__ import annotations

from typing import Any

from api_helpers import World
from test_archive_uploads import image_tar

from app.settings import Settings
from app.storage import evaluation_logs_dir
from app.tables import EvaluationStatus

SECRET = "ground truth of 001.tiff: 17 figures"


def _container_with_logs(world: World, settings: Settings, team: dict[str, Any]) -> int:
    world.phase.allowed_kinds = ["predictions", "container"]
    world.db.commit()
    r = world.client.post(
        f"/api/v1/phases/{world.phase.id}/submissions",
        params={"kind": "container"},
        headers=team["headers"],
        files={"file": ("image.tar", image_tar())},
    )
    assert r.status_code == 201, r.text
    ev = world.finish(r.json()["id"], status=EvaluationStatus.FAILED)
    logs = evaluation_logs_dir(settings.storage_path, ev.id)
    logs.mkdir(parents=True)
    (logs / "001.tiff.log").write_text(f"{SECRET}\nModuleNotFoundError: No module named 'timm'\n")
    (logs / "002.tiff.log").write_text("y" * 100_000 + "\nend of 002\n")
    (logs / "003.tiff.log").symlink_to("/etc/passwd")  # never read
    return int(r.json()["id"])


def test_a_hidden_phase_shows_the_team_only_the_line(world: World, settings: Settings) -> None:
    team = world.register("Alpha")
    submission_id = _container_with_logs(world, settings, team)
    assert world.phase.show_logs is False
    mine = world.client.get(f"/api/v1/submissions/{submission_id}", headers=team["headers"]).json()
    assert mine["logs_shown"] is False
    assert mine["evaluation"]["error_message"] == "time limit exceeded"
    refused = world.client.get(f"/api/v1/submissions/{submission_id}/logs", headers=team["headers"])
    assert refused.status_code == 403
    assert SECRET not in refused.text
    organiser = world.client.get(f"/api/v1/admin/submissions/{submission_id}/logs", headers=world.admin())
    assert organiser.status_code == 200, organiser.text
    cases = {c["case"]: c for c in organiser.json()["cases"]}
    assert set(cases) == {"001.tiff", "002.tiff"}
    assert SECRET in cases["001.tiff"]["log"]


def test_a_phase_that_shows_logs_gives_them_to_the_team_only(world: World, settings: Settings) -> None:
    world.phase.show_logs = True
    world.db.commit()
    team, other = world.register("Alpha"), world.register("Beta")
    submission_id = _container_with_logs(world, settings, team)
    assert world.client.get(f"/api/v1/submissions/{submission_id}", headers=team["headers"]).json()["logs_shown"]
    got = world.client.get(f"/api/v1/submissions/{submission_id}/logs", headers=team["headers"])
    assert got.status_code == 200, got.text
    cases = {c["case"]: c for c in got.json()["cases"]}
    assert "ModuleNotFoundError: No module named 'timm'" in cases["001.tiff"]["log"]
    assert cases["002.tiff"]["truncated"] is True
    assert len(cases["002.tiff"]["log"]) == 64 * 1024
    assert cases["002.tiff"]["log"].endswith("end of 002\n")
    whole = world.client.get(
        f"/api/v1/submissions/{submission_id}/logs", params={"case": "002.tiff"}, headers=team["headers"]
    ).json()["cases"][0]
    assert (whole["truncated"], len(whole["log"])) == (False, 100_000 + len("\nend of 002\n"))
    missing = world.client.get(
        f"/api/v1/submissions/{submission_id}/logs", params={"case": "../secret"}, headers=team["headers"]
    )
    assert missing.status_code == 404
    assert world.client.get(f"/api/v1/submissions/{submission_id}/logs", headers=other["headers"]).status_code == 404
