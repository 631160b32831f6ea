"""Reference-like images, saved as .tar.gz, run unchanged through the product to a board row.

`midog-eval serve` with its gpu-queue worker on the podman backend; the organiser API registers a Track 1
and a Track 2 test set and opens a phase on each that takes containers, in exec and in invoke mode; a team
uploads the images through the submissions API as `docker save | gzip` writes them, and each one lands on
its phase's leaderboard with the scores its weights give. The images are those of test_reference_images.py
(`useradd -m -r` USER, a `pip install --user` package, inputs.json read first, weights in the image).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tifffile

from tests.classification_set import write_classification_set
from tests.containers.reference_images import build_reference_image
from tests.containers.test_reference_images import GROUND_TRUTH, IMAGE_WEIGHTS
from tests.live_server import Server, running_server
from tests.sandbox.images import require_backend
from worker.datasets.manifest import Case, Manifest, write_test_set

PASSWORD = "correct horse battery staple 42"
SPACING_MM = 0.01


def detection_set(root: Path) -> Path:
    """Two 100 x 100 px cases at 0.01 mm/px with the ground truth of test_reference_images.py."""
    (root / "images").mkdir(parents=True)
    cases = []
    for name in GROUND_TRUTH:
        image = root / "images" / name
        tifffile.imwrite(image, np.full((100, 100, 3), 200, dtype=np.uint8), photometric="rgb")
        cases.append(
            Case(
                name=name,
                image=f"images/{name}",
                scanner="scanner-A",
                width=100,
                height=100,
                spacing_mm=SPACING_MM,
                sha256=None,
                groups={"scanner": "scanner-A"},
            )
        )
    write_test_set(root, Manifest(name="track1", cases=tuple(cases)), ground_truth=GROUND_TRUTH)
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    require_backend("podman")
    environment = {
        "MIDOG_SANDBOX_BACKEND": "podman",
        "MIDOG_CONTAINER_GPU": "none",
        "MIDOG_CONTAINER_MEMORY_BYTES": str(1024**3),
        "MIDOG_CONTAINER_CPUS": "1",
        "MIDOG_CONTAINER_CASE_SECONDS": "120",
    }
    with running_server(tmp_path_factory.mktemp("board-rows"), gpu_worker=True, **environment) as running:
        yield running


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    require_backend("podman")
    workdir = tmp_path_factory.mktemp("board-images")
    return {
        mode: build_reference_image(workdir, mode=mode, weights=IMAGE_WEIGHTS, name=mode) for mode in ("exec", "invoke")
    }


@pytest.fixture(scope="module")
def phases(server: Server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Four open phases (track 1 and 2, exec and invoke) and one registered team."""
    root = tmp_path_factory.mktemp("board-sets")
    sets = {"track1": detection_set(root / "track1"), "track2": write_classification_set(root / "track2")}
    admin = server.organiser()
    ids: dict[str, int] = {}
    with httpx.Client(base_url=server.base, timeout=120, headers=admin) as client:
        challenge = client.post(
            "/api/v1/admin/challenges", json={"slug": "refs", "title": "References", "is_published": True}
        )
        assert challenge.status_code == 201, challenge.text
        for track, path in sets.items():
            test_set = client.post("/api/v1/admin/test-sets", json={"name": track, "path": str(path)})
            assert test_set.status_code == 201, test_set.text
            for mode in ("exec", "invoke"):
                body: dict[str, Any] = {
                    "slug": f"{track}-{mode}",
                    "title": f"{track} {mode}",
                    "test_set_id": test_set.json()["id"],
                    "allowed_kinds": ["container"],
                    "run_mode": mode,
                    "daily_quota": 10,
                    "opens_at": "2020-01-01T00:00:00Z",
                    "closes_at": "2099-01-01T00:00:00Z",
                }
                if track == "track2":
                    body["scoring_options"] = {"task": "classification"}
                phase = client.post(f"/api/v1/admin/challenges/{challenge.json()['id']}/phases", json=body)
                assert phase.status_code == 201, phase.text
                ids[f"{track}-{mode}"] = phase.json()["id"]
    team = httpx.post(
        f"{server.base}/api/v1/auth/register",
        json={"team_name": "Reference Team", "email": "refs@example.org", "password": PASSWORD},
        timeout=30,
    )
    assert team.status_code == 201, team.text
    return {"ids": ids, "team": {"Authorization": f"Bearer {team.json()['token']['token']}"}}


def submit_and_wait(server: Server, phase_id: int, headers: dict[str, str], archive: Path) -> dict[str, Any]:
    with archive.open("rb") as handle:
        created = httpx.post(
            f"{server.base}/api/v1/phases/{phase_id}/submissions",
            params={"kind": "container"},
            headers=headers,
            files={"file": (archive.name, handle, "application/gzip")},
            data={"method_name": archive.stem},
            timeout=300,
        )
    assert created.status_code == 201, created.text
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        sub = httpx.get(f"{server.base}/api/v1/submissions/{created.json()['id']}", headers=headers, timeout=30).json()
        status = (sub.get("evaluation") or {}).get("status")
        if status in {"succeeded", "failed", "cancelled"}:
            assert status == "succeeded", f"{sub}\n{server.logs()}"
            return dict(sub)
        time.sleep(1)
    raise AssertionError(f"submission not finished in 300 s\n{server.logs()}")


def board_row(server: Server, phase_id: int, submission_id: int) -> dict[str, Any]:
    deadline = time.monotonic() + 60  # the board is rebuilt by a queued task after the result lands
    while time.monotonic() < deadline:
        board = httpx.get(f"{server.base}/api/v1/phases/{phase_id}/leaderboard", timeout=30).json()
        rows = [e for e in board["entries"] if e["submission_id"] == submission_id]
        if rows:
            return dict(rows[0])
        time.sleep(0.5)
    raise AssertionError(f"submission {submission_id} is not on the board of phase {phase_id}")


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["exec", "invoke"])
def test_a_track1_image_reaches_the_board(
    server: Server, images: dict[str, Path], phases: dict[str, Any], mode: str
) -> None:
    phase_id = phases["ids"][f"track1-{mode}"]
    sub = submit_and_wait(server, phase_id, phases["team"], images[mode])
    row = board_row(server, phase_id, sub["id"])
    # The image's weights: two of three figures found, one false alarm.
    assert (row["tp"], row["fp"], row["fn"]) == (2, 1, 1)
    assert row["f1"] == pytest.approx(2 / 3)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["exec", "invoke"])
def test_a_track2_image_reaches_the_board(
    server: Server, images: dict[str, Path], phases: dict[str, Any], mode: str
) -> None:
    phase_id = phases["ids"][f"track2-{mode}"]
    sub = submit_and_wait(server, phase_id, phases["team"], images[mode])
    row = board_row(server, phase_id, sub["id"])
    # One normal figure of stack_1 called atypical; every other page right.
    assert (row["tp"], row["fp"], row["fn"]) == (5, 1, 0)
    assert row["balanced_accuracy"] is not None
    assert 0.5 < row["balanced_accuracy"] < 1.0
