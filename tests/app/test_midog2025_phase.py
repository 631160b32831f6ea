"""MIDOG 2025 Track 1 through the API: a midog2025 phase needs the 2025 ground truth's labels, and uploads are
refused as the official 2025 evaluator refuses them (422 naming the case and the point)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from api_helpers import World, write_test_set

from tests.midog2025_set import detections, write_midog2025_set


def _register(world: World, root: Path, name: str) -> int:
    r = world.client.post("/api/v1/admin/test-sets", json={"name": name, "path": str(root)}, headers=world.admin())
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def _phase(world: World, test_set_id: int, slug: str = "track1") -> Any:
    body = {
        "slug": slug,
        "title": "Track 1",
        "test_set_id": test_set_id,
        "daily_quota": None,
        "max_active_per_team": 10,
        "scoring_options": {"rules": "midog2025"},
    }
    return world.client.post(f"/api/v1/admin/challenges/{world.challenge.id}/phases", json=body, headers=world.admin())


def test_a_midog2025_phase_needs_a_tumour_domain_and_roi_type_for_every_case(world: World, tmp_path: Path) -> None:
    plain = _register(world, write_test_set(tmp_path / "plain"), "plain")
    refused = _phase(world, plain)
    assert refused.status_code == 422
    detail = refused.json()["detail"]
    assert "case '001.tiff'" in detail
    assert "'tumor domain'" in detail
    assert "midog2025" in detail
    accepted = _phase(world, _register(world, write_midog2025_set(tmp_path / "t1"), "t1"))
    assert accepted.status_code == 201, accepted.text
    assert accepted.json()["scoring_options"]["rules"] == "midog2025"


def test_uploads_are_refused_as_the_official_2025_evaluator_refuses_them(world: World, tmp_path: Path) -> None:
    phase = _phase(world, _register(world, write_midog2025_set(tmp_path / "t1"), "t1")).json()
    team = world.register("Alpha")
    good = detections({"001.tiff": [(0.05, 0.05, 0.9)]})
    accepted = world.submit(team["headers"], json.dumps(good).encode(), phase_id=phase["id"])
    assert accepted.status_code == 201, accepted.text

    def variant(change: dict[str, Any]) -> bytes:
        doc = detections({"001.tiff": [(0.05, 0.05, 0.9)], "002.tiff": [(0.05, 0.05, 0.8), (0.1, 0.1, 0.7)]})
        point = doc["002.tiff"]["points"][1]
        for key, value in change.items():
            if value is None:
                del point[key]
            else:
                point[key] = value
        return json.dumps(doc).encode()

    cases = [
        ({"name": None}, 'missing "name"'),
        ({"probability": None}, 'missing "probability"'),
        ({"name": "mitosis"}, "name"),
        ({"point": [130.1, 0.1, 0.0]}, "pixel coordinates are the likely cause"),
        ({"point": [0.1, -0.01, 0.0]}, "lies below -0.0075 mm"),
    ]
    for change, message in cases:
        r = world.submit(team["headers"], variant(change), phase_id=phase["id"])
        assert r.status_code == 422, (change, r.text)
        detail = r.json()["detail"]
        assert message in detail, detail
        assert "002.tiff" in detail, detail
        assert "point 1" in detail, detail
