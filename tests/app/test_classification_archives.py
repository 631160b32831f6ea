"""Model archives are checked against the phase's task at upload: a classifier archive (`"task":
"classification"`) is accepted by a MIDOG 2025 Track 2 phase, a detector archive is refused there with a 422
naming manifest.json's task, and the other way round in a detection phase. Nothing is loaded (no torch)."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

from api_helpers import World

from app.tables import Phase
from tests.classification_set import write_classification_set

CLASSIFIER: dict[str, Any] = {
    "format_version": 1,
    "task": "classification",
    "model": "model.pt",
    "input": {"patch_size": 64},
    "output": {"kind": "binary", "activation": "sigmoid"},
}
DETECTOR: dict[str, Any] = {
    "format_version": 1,
    "model": "model.pt",
    "input": {"tile_size": 256, "overlap": 32, "spacing_mm": 0.00025},
    "output": {"kind": "heatmap", "stride": 4, "threshold": 0.5, "nms_radius_px": 12},
}


def _model_zip(manifest: dict[str, Any]) -> bytes:
    """A model archive whose model file has TorchScript's member names (all the upload check looks at)."""
    model = io.BytesIO()
    with zipfile.ZipFile(model, "w") as zf:
        for name in ("model/code/__torch__.py", "model/constants.pkl", "model/data.pkl"):
            zf.writestr(name, b"")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("manifest.json", json.dumps(manifest))
        zf.writestr("model.pt", model.getvalue())
    return buffer.getvalue()


def _classification_phase(world: World, tmp_path: Path) -> int:
    root = write_classification_set(tmp_path / "track2")
    registered = world.client.post(
        "/api/v1/admin/test-sets", json={"name": "track2", "path": str(root)}, headers=world.admin()
    )
    assert registered.status_code == 201, registered.text
    body = {
        "slug": "atypical",
        "title": "Atypical",
        "test_set_id": registered.json()["id"],
        "daily_quota": None,
        "max_active_per_team": 10,
        "scoring_options": {"task": "classification"},
    }
    r = world.client.post(f"/api/v1/admin/challenges/{world.challenge.id}/phases", json=body, headers=world.admin())
    assert r.status_code == 201, r.text
    phase_id: int = r.json()["id"]
    phase = world.db.get(Phase, phase_id)
    assert phase is not None
    phase.allowed_kinds = ["predictions", "model"]  # as test_archive_uploads does: no gpu worker runs here
    world.db.commit()
    return phase_id


def test_a_classification_phase_takes_classifiers_and_refuses_detectors(
    world: World, tmp_path: Path, sent_tasks: list[Any]
) -> None:
    phase_id = _classification_phase(world, tmp_path)
    team = world.register("Alpha")
    refused = world.submit(
        team["headers"], _model_zip(DETECTOR), phase_id=phase_id, kind="model", filename="detector.zip"
    )
    assert refused.status_code == 422, refused.text
    assert refused.json()["detail"] == (
        "manifest.json: task: the archive is a detection model, but a classification phase needs a classifier "
        '(manifest "task": "classification")'
    )
    assert sent_tasks == []
    accepted = world.submit(
        team["headers"], _model_zip(CLASSIFIER), phase_id=phase_id, kind="model", filename="classifier.zip"
    )
    assert accepted.status_code == 201, accepted.text
    assert sent_tasks[-1][2] == "gpu"


def test_a_detection_phase_refuses_a_classifier(world: World, sent_tasks: list[Any]) -> None:
    world.phase.allowed_kinds = ["predictions", "model"]
    world.db.commit()
    team = world.register("Beta")
    refused = world.submit(team["headers"], _model_zip(CLASSIFIER), kind="model", filename="classifier.zip")
    assert refused.status_code == 422, refused.text
    assert refused.json()["detail"].startswith(
        "manifest.json: task: the archive is a classification model, but a detection phase needs a detector"
    )
    assert sent_tasks == []
    assert world.submit(team["headers"], _model_zip(DETECTOR), kind="model", filename="d.zip").status_code == 201
