"""Pages of compute (both database backends): the organisers' dashboard lists GPU hosts with their runner
token, classes, GPUs, cache and last heartbeat (stale ones marked) and the GPU-hours spent per phase and team
with what is queued; the submit page shows the line that refuses model and container uploads once a GPU
budget is spent."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

sys.path.insert(0, str(Path(__file__).parent))

from seed import Seeded
from test_account import register
from test_organiser import _sign_in, _token

from app.main import create_app
from app.settings import Settings
from app.tables import Evaluation, EvaluationStatus, Phase, Submission, SubmissionKind, Team, WorkerNode, utcnow


@pytest.fixture
def browser(
    tmp_path: Path, database_url: str, session_factory: sessionmaker[Session], inline_rebuilds: list[Any]
) -> Iterator[TestClient]:
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url)
    with TestClient(create_app(settings, session_factory=session_factory)) as c:
        yield c


def _host(db: Session, name: str, *, gpus: list[str], seen_s_ago: float) -> None:
    db.add(
        WorkerNode(
            name=f"gpu-host:{name}:node",
            hostname="node",
            queues="gpu,gpu-a100",
            last_seen_at=utcnow() - timedelta(seconds=seen_s_ago),
            capabilities={
                "role": "gpu-host",
                "runner_token": name,
                "gpu_classes": ["gpu", "a100"],
                "gpus": gpus,
                "cache": {"used_bytes": 2 * 1024**3, "max_bytes": 100 * 1024**3, "hits": 12, "misses": 3},
                "kinds": ["model"],
                "problems": {"container": "podman is missing"},
            },
        )
    )
    db.commit()


def _spend(db: Session, phase_id: int, team_name: str, seconds: float, status: EvaluationStatus) -> None:
    team = db.query(Team).filter(Team.name == team_name).one()
    submission = Submission(
        phase_id=phase_id, team=team, kind=SubmissionKind.MODEL, file_path="x", sha256="0" * 64, size_bytes=1
    )
    db.add(Evaluation(submission=submission, version=1, status=status, gpu_seconds=seconds))
    db.commit()


def test_the_dashboard_lists_gpu_hosts_and_compute(browser: TestClient, seeded: Seeded, db_session: Session) -> None:
    _host(db_session, "gpu-fresh", gpus=["NVIDIA L4", "NVIDIA L4"], seen_s_ago=0)
    _host(db_session, "gpu-gone", gpus=[], seen_s_ago=3600)
    phase = db_session.get(Phase, seeded.public_phase_id)
    assert phase is not None
    phase.gpu_budget_hours = 1.0
    phase.team_share = 0.5
    db_session.commit()
    _spend(db_session, phase.id, "Aurora", 1800.0, EvaluationStatus.SUCCEEDED)
    _spend(db_session, phase.id, "Cirrus", 0.0, EvaluationStatus.QUEUED)
    _sign_in(browser, _token(db_session))
    page = browser.get("/organiser").text
    fresh = re.search(r'<tr data-gpu-host="gpu-host:gpu-fresh:node">(.*?)</tr>', page, re.S)
    gone = re.search(r'<tr data-gpu-host="gpu-host:gpu-gone:node">(.*?)</tr>', page, re.S)
    assert fresh, page[:3000]
    assert gone
    assert '<th scope="row">gpu-fresh</th>' in fresh.group(1)
    assert "gpu, a100" in fresh.group(1)
    assert "2 x NVIDIA L4" in fresh.group(1)
    assert "2.0 GiB / 100.0 GiB, 12 hits, 3 misses" in fresh.group(1)
    assert '<td class="state">up</td>' in fresh.group(1)
    assert "container: podman is missing" in fresh.group(1)
    assert "none (CPU)" in gone.group(1)
    assert "stale" in gone.group(1)
    phase_row = re.search(rf'<tr data-compute-phase="{phase.id}">(.*?)</tr>', page, re.S)
    assert phase_row
    assert "<td>0.50</td>" in phase_row.group(1)  # GPU-hours of all teams
    assert "<td>1</td><td>0</td>" in phase_row.group(1)  # one queued, none running
    aurora = re.search(r'<tr data-compute-team="[0-9]+-[0-9]+"><td></td><td></td><td>Aurora</td>(.*?)</tr>', page, re.S)
    assert aurora
    assert "0.50" in aurora.group(1)
    assert "spent" in aurora.group(1)  # its share, 0.5 of 1 GPU-hour, is used


def test_the_submit_page_shows_a_spent_budget(browser: TestClient, seeded: Seeded, db_session: Session) -> None:
    phase = db_session.get(Phase, seeded.public_phase_id)
    assert phase is not None
    phase.allowed_kinds = ["predictions", "model"]
    phase.gpu_budget_hours = 2.0
    db_session.commit()
    register(browser, "Spenders", "spend@example.org")
    page = browser.get(f"/phases/{phase.id}/submit").text
    assert re.search(r'id="gpu-budget">2.0 GPU-hours for model and container runs', page), page[:3000]
    _spend(db_session, phase.id, "Aurora", 7200.0, EvaluationStatus.SUCCEEDED)
    page = browser.get(f"/phases/{phase.id}/submit").text
    assert "GPU budget of this phase spent: 2.00 of 2 GPU-hours used by all teams" in page
