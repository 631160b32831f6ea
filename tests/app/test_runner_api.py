"""The GPU hosts' job protocol (/api/v1/runner): runner tokens open it and nothing else; each job call is bound
to the token, attempt and job key of its claim; the manifest and the file route reach inputs only; finishing
hands the run to scoring on the cpu queue exactly once; failures end or retry the run."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from api_helpers import World, bearer, predictions
from fastapi.testclient import TestClient

from app.admin.content import record_content
from app.auth.service import create_token, revoke_token
from app.settings import Settings
from app.tables import ApiToken, Evaluation, EvaluationStatus, Submission, SubmissionKind, Team, TokenScope
from worker.datasets.content import content_of
from worker.vocabulary import CPU_QUEUE, GPU_QUEUE, RUN, SCORE_UPLOAD


@pytest.fixture
def job_world(world: World, settings: Settings) -> dict[str, Any]:
    """A model submission with a queued evaluation over a set recorded by content, and two runner tokens."""
    db = world.db
    root = world.test_set.manifest_path.rsplit("/", 1)[0]
    content = content_of(Path(root))
    record_content(db, world.test_set, content)
    artifact = b'{"replay": true}'
    path = settings.storage_path / "runner-test" / "model.zip"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(artifact)
    team = Team(name="runner-team", contact_email="r@example.org")
    submission = Submission(
        phase=world.phase,
        team=team,
        kind=SubmissionKind.MODEL,
        file_path="runner-test/model.zip",
        sha256=hashlib.sha256(artifact).hexdigest(),
        size_bytes=len(artifact),
    )
    evaluation = Evaluation(submission=submission, version=1)
    db.add(evaluation)
    a = create_token(db, scope=TokenScope.RUNNER, name="gpu-a")
    b = create_token(db, scope=TokenScope.RUNNER, name="gpu-b")
    db.commit()
    return {
        "evaluation_id": evaluation.id,
        "a": bearer(a.token),
        "b": bearer(b.token),
        "a_id": a.row.id,
        "content": content,
        "artifact": artifact,
    }


def _claim(client: TestClient, job: dict[str, Any], who: str = "a") -> dict[str, Any]:
    r = client.post(
        f"/api/v1/runner/jobs/{job['evaluation_id']}/claim", json={"host": f"gpu-{who}:1"}, headers=job[who]
    )
    assert r.status_code == 200, r.text
    return dict(r.json())


def _job(
    job: dict[str, Any], claim: dict[str, Any], who: str = "a", key: str | None = None
) -> tuple[str, dict[str, str]]:
    path = f"/api/v1/runner/jobs/{job['evaluation_id']}/attempts/{claim['attempt']}"
    return path, {**job[who], "X-Job-Key": claim["job_key"] if key is None else key}


def test_runner_tokens_open_the_job_protocol_and_nothing_else(world: World, job_world: dict[str, Any]) -> None:
    client = world.client
    assert client.get("/api/v1/runner/ping", headers=job_world["a"]).json()["name"] == "gpu-a"
    assert client.get("/api/v1/admin/tokens", headers=job_world["a"]).status_code == 403
    assert client.get("/api/v1/me", headers=job_world["a"]).status_code == 403
    assert client.get("/api/v1/runner/ping", headers=world.admin()).status_code == 403
    team = world.register("Participants")
    assert (
        client.post(
            f"/api/v1/runner/jobs/{job_world['evaluation_id']}/claim", json={"host": "x"}, headers=team["headers"]
        ).status_code
        == 403
    )


def test_the_manifest_and_the_file_route_reach_inputs_only(world: World, job_world: dict[str, Any]) -> None:
    client = world.client
    claim = _claim(client, job_world)
    assert claim["claimed"] is True
    assert claim["attempt"] == 1
    path, headers = _job(job_world, claim)
    manifest = client.get(path + "/manifest", headers=headers).json()
    content = job_world["content"]
    assert {f["sha256"] for f in manifest["test_set"]["files"]} == {f.sha256 for f in content.inputs}
    assert not any(f["path"].startswith("ground-truth") for f in manifest["test_set"]["files"])
    assert manifest["submission"]["sha256"] == hashlib.sha256(job_world["artifact"]).hexdigest()
    assert "manifest_path" not in json.dumps(manifest)
    got = client.get(f"{path}/files/{manifest['submission']['sha256']}", headers=headers)
    assert got.status_code == 200
    assert got.content == job_world["artifact"]
    image = next(f for f in manifest["test_set"]["files"] if f["path"].startswith("images/"))
    assert (
        hashlib.sha256(client.get(f"{path}/files/{image['sha256']}", headers=headers).content).hexdigest()
        == image["sha256"]
    )
    assert content.truth
    for truth in content.truth:
        assert client.get(f"{path}/files/{truth.sha256}", headers=headers).status_code == 404


def test_job_calls_are_bound_to_the_token_attempt_and_key(world: World, job_world: dict[str, Any]) -> None:
    client = world.client
    claim = _claim(client, job_world)
    again = _claim(client, job_world, "b")
    assert again["claimed"] is False
    assert again["outcome"] == "held"
    path, headers = _job(job_world, claim)
    for other in (_job(job_world, claim, "b")[1], _job(job_world, claim, key="not-the-key")[1]):
        assert client.post(path + "/lease", json={}, headers=other).status_code == 409
        assert client.put(path + "/predictions", content=predictions(), headers=other).status_code == 409
        assert client.get(path + "/manifest", headers=other).status_code == 409
    wrong_attempt = path.replace("/attempts/1", "/attempts/2")
    assert client.post(wrong_attempt + "/lease", json={}, headers=headers).status_code == 409
    assert client.post(path + "/lease", json={"progress": 0.5, "message": "half"}, headers=headers).status_code == 200


def test_finish_sends_scoring_to_the_cpu_queue_once(
    world: World, job_world: dict[str, Any], sent_tasks: list[Any], settings: Settings
) -> None:
    client = world.client
    claim = _claim(client, job_world)
    path, headers = _job(job_world, claim)
    assert client.post(path + "/finish", json={"run_seconds": 1}, headers=headers).status_code == 409  # no output
    assert client.put(path + "/predictions", content=predictions(), headers=headers).status_code == 200
    assert client.put(path + "/logs/001.tiff", content=b"a log line\n", headers=headers).status_code == 200
    assert client.put(path + "/logs/..hidden", content=b"x", headers=headers).status_code == 422
    r = client.post(path + "/finish", json={"run_seconds": 3.5, "run_info": {"worker": "gpu-host a"}}, headers=headers)
    assert r.status_code == 202, r.text
    evaluation_id = job_world["evaluation_id"]
    assert (SCORE_UPLOAD, {"evaluation_id": evaluation_id, "attempt": 1}, CPU_QUEUE) in sent_tasks
    world.db.expire_all()
    row = world.db.get(Evaluation, evaluation_id)
    assert row is not None
    assert row.lease_owner == f"scoring/{evaluation_id}/1"
    # the lease has passed to scoring: the host can land nothing more for this attempt
    assert client.post(path + "/finish", json={"run_seconds": 1}, headers=headers).status_code == 409
    assert client.put(path + "/predictions", content=b"{}", headers=headers).status_code == 409
    assert sum(1 for name, *_ in sent_tasks if name == SCORE_UPLOAD) == 1
    uploads = settings.data_dir / "work" / f"evaluation-{evaluation_id}" / "uploads" / "attempt-1"
    assert json.loads((uploads / "run.json").read_text())["run_seconds"] == 3.5
    assert (
        settings.storage_path / "logs" / f"evaluation-{evaluation_id}" / "001.tiff.log"
    ).read_bytes() == b"a log line\n"


def test_failures_end_the_run_or_retry_it(world: World, job_world: dict[str, Any], sent_tasks: list[Any]) -> None:
    client = world.client
    evaluation_id = job_world["evaluation_id"]
    claim = _claim(client, job_world)
    path, headers = _job(job_world, claim)
    r = client.post(path + "/failure", json={"kind": "infrastructure", "detail": "cache full"}, headers=headers)
    assert r.json()["status"] == "retrying"
    assert (RUN, {"evaluation_id": evaluation_id}, GPU_QUEUE) in sent_tasks
    claim = _claim(client, job_world, "b")
    assert claim["attempt"] == 2
    path, headers = _job(job_world, claim, "b")
    r = client.post(
        path + "/failure", json={"kind": "participant", "message": "no output for 001.tiff"}, headers=headers
    )
    assert r.json()["status"] == "failed"
    world.db.expire_all()
    row = world.db.get(Evaluation, evaluation_id)
    assert row is not None
    assert row.status is EvaluationStatus.FAILED
    assert row.error_message == "no output for 001.tiff"
    assert row.infrastructure_failure is False


def test_a_revoked_runner_token_is_refused_at_once(world: World, job_world: dict[str, Any]) -> None:
    client = world.client
    claim = _claim(client, job_world)
    path, headers = _job(job_world, claim)
    token = world.db.get(ApiToken, job_world["a_id"])
    assert token is not None
    revoke_token(world.db, token=token)
    world.db.commit()
    assert client.get("/api/v1/runner/ping", headers=job_world["a"]).status_code == 401
    assert client.post(path + "/lease", json={}, headers=headers).status_code == 401
    assert (
        client.post(
            f"/api/v1/runner/jobs/{job_world['evaluation_id']}/claim", json={"host": "a"}, headers=job_world["a"]
        ).status_code
        == 401
    )


def test_a_predictions_evaluation_is_never_claimed_by_a_gpu_host(world: World, job_world: dict[str, Any]) -> None:
    team = world.register("Predictors")
    submitted = world.submit(team["headers"])
    assert submitted.status_code == 201, submitted.text
    evaluation_id = submitted.json()["evaluation"]["id"]
    r = world.client.post(f"/api/v1/runner/jobs/{evaluation_id}/claim", json={"host": "a"}, headers=job_world["a"])
    assert r.status_code == 409
