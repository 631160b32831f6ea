"""MIDOG 2025 Track 2 through the API: a classification test set, a classification phase, checked uploads, and
the board of a classification phase (balanced accuracy per tumour domain, ROC AUC)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from api_helpers import World

from tests.classification_set import outputs, write_classification_set


def _classification_phase(world: World, tmp_path: Path, **fields: Any) -> dict[str, Any]:
    root = write_classification_set(tmp_path / "track2")
    registered = world.client.post(
        "/api/v1/admin/test-sets", json={"name": "track2", "path": str(root)}, headers=world.admin()
    )
    assert registered.status_code == 201, registered.text
    assert registered.json()["task"] == "classification"
    body = {
        "slug": "atypical",
        "title": "Atypical",
        "test_set_id": registered.json()["id"],
        "daily_quota": None,
        "scoring_options": {"task": "classification", "bootstrap": 100},
        **fields,
    }
    r = world.client.post(f"/api/v1/admin/challenges/{world.challenge.id}/phases", json=body, headers=world.admin())
    assert r.status_code == 201, r.text
    phase: dict[str, Any] = r.json()
    return phase


def test_a_classification_phase_needs_a_classification_set_and_ranks_by_balanced_accuracy(
    world: World, tmp_path: Path
) -> None:
    phase = _classification_phase(world, tmp_path)
    assert phase["ranking_metric"] == "balanced_accuracy"
    assert phase["scoring_options"]["task"] == "classification"
    detection = world.client.post(
        f"/api/v1/admin/challenges/{world.challenge.id}/phases",
        json={"slug": "wrong", "title": "Wrong", "test_set_id": phase["test_set_id"]},
        headers=world.admin(),
    )
    assert detection.status_code == 422
    assert "is a classification set, but this phase scores detection" in detection.json()["detail"]
    by_ap = world.client.patch(
        f"/api/v1/admin/phases/{phase['id']}", json={"ranking_metric": "ap"}, headers=world.admin()
    )
    assert by_ap.status_code == 422
    assert "classification phases rank by balanced_accuracy, roc_auc" in by_ap.json()["detail"]


def test_uploads_to_a_classification_phase_are_checked_as_the_official_evaluator_reads_them(
    world: World, tmp_path: Path, sent_tasks: list[Any]
) -> None:
    phase = _classification_phase(world, tmp_path, max_active_per_team=10)
    team = world.register("Alpha")
    good = world.submit(team["headers"], json.dumps(outputs(flip=5)).encode(), phase_id=phase["id"])
    assert good.status_code == 201, good.text
    assert sent_tasks[-1][2] == "cpu"
    integer = outputs()
    integer["stack_2.tiff"][1]["confidence"] = 1
    cases = [
        (integer, "stack_2.tiff[1]: confidence must be a float (JSON 1 is not; write e.g. 1.0)"),
        ({**outputs(), "stack_3.tiff": outputs()["stack_3.tiff"][:1]}, "stack_3.tiff: 1 outputs for 2 patches"),
        ({k: v for k, v in outputs().items() if k != "stack_4.tiff"}, "no output for 1 stack(s): stack_4.tiff"),
        ({**outputs(), "stack_9.tiff": []}, "stack 'stack_9.tiff' is not in the test set"),
    ]
    for content, message in cases:
        r = world.submit(team["headers"], json.dumps(content).encode(), phase_id=phase["id"])
        assert r.status_code == 422, r.text
        assert message in r.json()["detail"]
    csv = "image,index,class,confidence\n" + "".join(
        f"{name},{i},{item['class']},{item['confidence']}\n"
        for name, items in outputs().items()
        for i, item in enumerate(items)
    )
    r = world.submit(team["headers"], csv.encode(), phase_id=phase["id"], filename="outputs.csv")
    assert r.status_code == 201, r.text
