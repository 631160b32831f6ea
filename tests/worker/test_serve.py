"""`midog-eval serve` on the embedded default: SQLite and the server-less broker, no PostgreSQL or Redis.

A predictions file submitted through the API is scored by the worker that `serve` started and appears on
the leaderboard JSON; a row committed without a message is picked up by the reconciler (R7, embedded).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.live_server import REPO_ROOT, Server, descendants, running_server, wait_gone

FAST_RECONCILER = {"MIDOG_REQUEUE_AFTER_S": "1", "MIDOG_RECONCILE_INTERVAL_S": "1"}

pytestmark = pytest.mark.slow


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    with running_server(tmp_path, **FAST_RECONCILER) as running:
        yield running


def _on_board(client: httpx.Client, phase_id: int, submission_id: int, timeout_s: float) -> dict[str, Any] | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        board = client.get(f"/api/v1/phases/{phase_id}/leaderboard").json()
        for entry in board["entries"]:
            if entry["submission_id"] == submission_id:
                return dict(entry)
        time.sleep(0.1)
    return None


def _submit_and_check(server: Server, small_set: Any, predictions_for: Any) -> None:
    admin = server.organiser()
    with httpx.Client(base_url=server.base, timeout=30) as client:
        test_set = client.post(
            "/api/v1/admin/test-sets", json={"name": "small", "path": str(small_set.root)}, headers=admin
        )
        assert test_set.status_code == 201, test_set.text
        challenge = client.post("/api/v1/admin/challenges", json={"slug": "c", "title": "C"}, headers=admin).json()
        phase = client.post(
            f"/api/v1/admin/challenges/{challenge['id']}/phases",
            json={"slug": "p", "title": "P", "test_set_id": test_set.json()["id"], "max_active_per_team": 5},
            headers=admin,
        ).json()
        team = client.post(
            "/api/v1/auth/register",
            json={"team_name": "Team", "email": "team@example.org", "password": "a-long-password"},
        ).json()
        headers = {"Authorization": f"Bearer {team['token']['token']}"}
        predictions = predictions_for(small_set, 5)
        submitted = client.post(
            f"/api/v1/phases/{phase['id']}/submissions",
            params={"kind": "predictions"},
            headers=headers,
            files={"file": ("predictions.json", json.dumps(predictions).encode())},
        )
        assert submitted.status_code == 201, submitted.text
        started = time.monotonic()
        entry = _on_board(client, phase["id"], submitted.json()["id"], 30)
        assert entry is not None, (server.data_dir / "logs" / "worker-cpu.log").read_text()[-3000:]
        # Well inside the reconciler's re-send interval: the wake-up itself went through the broker.
        assert time.monotonic() - started < 5
        # The leaderboard shows what the scoring core computes for the same file.
        from worker.pipeline import PipelineInput, run_pipeline

        artifact = server.data_dir / "p.json"
        artifact.write_text(json.dumps(predictions))
        expected = run_pipeline(
            PipelineInput(
                evaluation_id=0,
                kind="predictions",
                artifact=artifact,
                test_set_dir=small_set.root,
                work_dir=server.data_dir,
                timeout_s=10,
            )
        )
        assert (entry["tp"], entry["fp"], entry["fn"]) == (expected.tp, expected.fp, expected.fn)


def test_serve_scores_a_submitted_predictions_file_onto_the_leaderboard(
    server: Server, small_set: Any, predictions_for: Any
) -> None:
    assert (server.data_dir / "midog-eval.sqlite3").stat().st_size > 0
    assert (server.data_dir / "broker.sqlite3").exists()
    _submit_and_check(server, small_set, predictions_for)


@pytest.mark.services
def test_serve_uses_postgresql_and_redis_from_the_conventional_variables(
    tmp_path: Path,
    create_database: Any,
    migrate_url: Any,
    own_redis: Any,
    small_set: Any,
    predictions_for: Any,
) -> None:
    from sqlalchemy.engine import make_url

    database_url = create_database("postgresql")
    redis_url = own_redis()
    # The bare postgresql:// form that hosting platforms hand out.
    bare = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with running_server(tmp_path, DATABASE_URL=bare, REDIS_URL=redis_url, **FAST_RECONCILER) as running:
        _submit_and_check(running, small_set, predictions_for)
        assert not (running.data_dir / "midog-eval.sqlite3").exists()
        assert not (running.data_dir / "broker.sqlite3").exists()
    import redis

    assert redis.Redis.from_url(redis_url).exists("_kombu.binding.cpu")


def test_serve_reconciles_an_evaluation_that_was_never_enqueued(
    server: Server, small_set: Any, predictions_for: Any
) -> None:
    """R7 on the embedded broker: the row is committed directly, no message is ever sent."""
    code = f"""
from pathlib import Path
from app.db import session_scope
from app.tables import Challenge, Evaluation, Phase, Submission, SubmissionKind, Team, TestSet
from app.settings import get_settings
from app.scoring import fingerprint
from worker.datasets.manifest import scoring_digest
storage = get_settings().storage_path
(storage / "direct").mkdir(parents=True, exist_ok=True)
(storage / "direct" / "p.json").write_text({json.dumps(predictions_for(small_set, 9))!r})
with session_scope() as s:
    digest = scoring_digest(Path({str(small_set.root)!r}))
    ts = TestSet(name="direct", manifest_path={str(small_set.root / "manifest.json")!r}, manifest_sha256="0" * 64,
                 scoring_digest=digest, case_count=6, cases={{}})
    phase = Phase(challenge=Challenge(slug="d", title="D"), slug="p", title="P", test_set=ts,
                  scoring_fingerprint=fingerprint({{}}, digest))
    sub = Submission(phase=phase, team=Team(name="direct", contact_email="d@example.org"),
                     kind=SubmissionKind.PREDICTIONS, file_path="direct/p.json", sha256="0" * 64, size_bytes=1)
    ev = Evaluation(submission=sub, version=1)
    s.add(ev)
    s.flush()
    print(ev.id)
"""
    out = subprocess.run([sys.executable, "-c", code], env=server.env, cwd=REPO_ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    evaluation_id = int(out.stdout.split()[-1])
    probe = (
        "from app.db import session_scope\nfrom app.tables import Evaluation\n"
        f"with session_scope() as s:\n    e = s.get(Evaluation, {evaluation_id})\n    print(e.error_message, e.status)\n"
    )
    deadline = time.monotonic() + 30
    status = ""
    while time.monotonic() < deadline:
        status = subprocess.run(
            [sys.executable, "-c", probe], env=server.env, cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        if status.endswith(("succeeded", "failed")):
            break
        time.sleep(0.5)
    assert status == "succeeded", (server.data_dir / "logs" / "worker-cpu.log").read_text()[-3000:]


def test_sigterm_to_serve_stops_its_workers(tmp_path: Path) -> None:
    with running_server(tmp_path) as running:
        tree = descendants(running.pid)
        assert len(tree) >= 2, "serve started no worker"  # the cpu worker, its pool child, beat
        os.kill(running.pid, signal.SIGTERM)  # to serve alone, as a service manager sends it
        assert wait_gone(tree, 60) == [], "workers outlived serve"
