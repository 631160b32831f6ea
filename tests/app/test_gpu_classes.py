"""Queues per GPU class: a phase names its class (a short slug, default gpu), its model and container runs go
to that class's queue (worker.vocabulary, the one routing rule) when created, requeued, retried or re-sent;
a runner's claim of a job of a class it does not serve is refused. GPU hosts report their classes, GPUs and
cache in a heartbeat of the job protocol, and the organisers' worker list shows them, stale ones marked.
Both database backends."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any

import pytest
from api_helpers import World, bearer
from test_archive_uploads import model_zip

from app import lifecycle
from app.auth.service import create_token
from app.tables import Evaluation, Submission, SubmissionKind, Team, TokenScope, WorkerNode, utcnow
from app.worker_hosts.service import gpus_text
from worker.vocabulary import RUN, gpu_queue, is_gpu_class, is_gpu_queue, queue_for


def test_routing_by_kind_and_class_is_one_rule() -> None:
    assert queue_for("predictions", "a100") == "cpu"
    assert queue_for("model") == "gpu"
    assert queue_for("container", "gpu") == "gpu"
    assert queue_for("model", "a100") == "gpu-a100"
    assert gpu_queue("h100-80g") == "gpu-h100-80g"
    assert [q for q in ("gpu", "gpu-a100", "cpu", "gpu-", "gpu-A100", "gpux") if is_gpu_queue(q)] == ["gpu", "gpu-a100"]
    for bad in ("", "A100", "a_100", "-a", "a-", "a--b", "x" * 33, "gpu a"):
        assert not is_gpu_class(bad), bad
        with pytest.raises(ValueError, match="GPU class"):
            gpu_queue(bad)


def test_a_phase_names_its_class_and_its_runs_go_to_that_queue(world: World, sent_tasks: list[Any]) -> None:
    url = f"/api/v1/admin/phases/{world.phase.id}"
    for bad in ("A100", "a100!", "", "a" * 33, None):
        assert world.client.patch(url, headers=world.admin(), json={"gpu_class": bad}).status_code == 422, bad
    r = world.client.patch(url, headers=world.admin(), json={"gpu_class": "a100"})
    assert r.status_code == 200, r.text
    assert r.json()["gpu_class"] == "a100"
    world.db.expire_all()
    world.phase.allowed_kinds = ["predictions", "model"]
    world.db.commit()
    team = world.register("Alpha")
    created = world.submit(team["headers"], model_zip(), kind="model", filename="detector.zip")
    assert created.status_code == 201, created.text
    assert sent_tasks[-1][0] == RUN
    assert sent_tasks[-1][2] == "gpu-a100"
    world.db.expire_all()
    evaluation = world.db.query(Evaluation).filter(Evaluation.submission_id == created.json()["id"]).one()
    assert lifecycle.cancel(world.db, evaluation=evaluation, reason=lifecycle.CancelReason.ORGANISERS)
    world.db.commit()
    requeued = world.client.post(f"/api/v1/admin/submissions/{created.json()['id']}/requeue", headers=world.admin())
    assert requeued.status_code in (200, 202), requeued.text
    assert sent_tasks[-1] == (RUN, {"evaluation_id": evaluation.id}, "gpu-a100")
    # the reconciler re-sends waiting rows to their class's queue
    (pending,) = lifecycle.waiting(world.db, queued_before=utcnow() + timedelta(seconds=1))
    assert (pending.evaluation_id, pending.gpu_class, queue_for(pending.kind, pending.gpu_class)) == (
        evaluation.id,
        "a100",
        "gpu-a100",
    )
    # predictions of the same phase are scored on the cpu queue, whatever its class
    assert world.submit(world.register("Beta")["headers"]).status_code == 201
    assert sent_tasks[-1][2] == "cpu"


@pytest.fixture
def class_job(world: World) -> dict[str, Any]:
    """A queued model evaluation in a phase of class a100, and a runner token."""
    world.phase.gpu_class = "a100"
    artifact = b"model bytes"
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
    world.db.add(evaluation)
    issued = create_token(world.db, scope=TokenScope.RUNNER, name="gpu-a100-1")
    world.db.commit()
    return {"evaluation_id": evaluation.id, "headers": bearer(issued.token), "token": issued.token}


def test_a_claim_of_a_job_of_a_class_the_runner_does_not_serve_is_refused(
    world: World, class_job: dict[str, Any]
) -> None:
    url = f"/api/v1/runner/jobs/{class_job['evaluation_id']}/claim"
    for classes in (None, ["gpu"], ["l4", "h100"]):
        body: dict[str, Any] = {"host": "gpu-a:1"} if classes is None else {"host": "gpu-a:1", "gpu_classes": classes}
        refused = world.client.post(url, json=body, headers=class_job["headers"])
        assert refused.status_code == 409, refused.text
        assert "needs GPU class 'a100'" in refused.json()["detail"]
    world.db.expire_all()
    assert world.db.get(Evaluation, class_job["evaluation_id"]).status.value == "queued"  # type: ignore[union-attr]
    bad = world.client.post(url, json={"host": "gpu-a:1", "gpu_classes": ["A100"]}, headers=class_job["headers"])
    assert bad.status_code == 422
    claimed = world.client.post(
        url, json={"host": "gpu-a:1", "gpu_classes": ["gpu", "a100"]}, headers=class_job["headers"]
    )
    assert claimed.status_code == 200, claimed.text
    assert claimed.json()["claimed"] is True


def _heartbeat(world: World, headers: dict[str, str], **fields: Any) -> Any:
    body = {
        "host": "node-7",
        "gpu_classes": ["gpu", "a100"],
        "gpus": ["NVIDIA H100 80GB HBM3", "NVIDIA H100 80GB HBM3"],
        "cache": {"used_bytes": 3 * 1024**3, "max_bytes": 100 * 1024**3, "hits": 41, "misses": 7},
        "kinds": ["model", "container"],
        **fields,
    }
    return world.client.post("/api/v1/runner/heartbeat", json=body, headers=headers)


def test_gpu_hosts_report_themselves_and_the_worker_list_shows_them(
    world: World, class_job: dict[str, Any], settings: Any
) -> None:
    r = _heartbeat(world, class_job["headers"])
    assert r.status_code == 200, r.text
    assert r.json()["heartbeat_s"] == settings.worker_heartbeat_s
    cpu_only = _heartbeat(world, class_job["headers"], host="laptop", gpus=[], gpu_classes=["gpu"], cache=None)
    assert cpu_only.status_code == 200
    listed = {w["name"]: w for w in world.client.get("/api/v1/admin/workers", headers=world.admin()).json()}
    host = listed[r.json()["worker"]]
    assert (host["alive"], host["stale"]) == (True, False)
    assert host["queues"] == ["gpu", "gpu-a100"]
    assert host["kinds"] == ["model", "container"]
    assert host["gpu_host"] == {
        "runner_token": "gpu-a100-1",
        "host": "node-7",
        "gpu_classes": ["gpu", "a100"],
        "gpus": ["NVIDIA H100 80GB HBM3", "NVIDIA H100 80GB HBM3"],
        "gpus_text": "2 x NVIDIA H100 80GB HBM3",
        "cache": {"used_bytes": 3 * 1024**3, "max_bytes": 100 * 1024**3, "hits": 41, "misses": 7},
    }
    laptop = listed[cpu_only.json()["worker"]]
    assert laptop["gpu_host"]["gpus_text"] == "none (CPU)"
    assert laptop["gpu_host"]["cache"] is None
    # a host not heard of within the staleness window is marked stale
    row = world.db.query(WorkerNode).filter(WorkerNode.name == r.json()["worker"]).one()
    row.last_seen_at = utcnow() - timedelta(seconds=settings.worker_stale_after_s + 5)
    world.db.commit()
    listed = {w["name"]: w for w in world.client.get("/api/v1/admin/workers", headers=world.admin()).json()}
    assert (listed[row.name]["alive"], listed[row.name]["stale"]) == (False, True)
    # a new heartbeat brings it back; the same host keeps one row
    assert _heartbeat(world, class_job["headers"]).status_code == 200
    listed = {w["name"]: w for w in world.client.get("/api/v1/admin/workers", headers=world.admin()).json()}
    assert listed[row.name]["alive"] is True
    assert len([n for n in listed if "node-7" in n]) == 1


def test_the_heartbeat_takes_runner_tokens_only_and_bounded_reports(world: World, class_job: dict[str, Any]) -> None:
    assert _heartbeat(world, world.admin()).status_code == 403
    assert _heartbeat(world, bearer("mdg_not-a-token")).status_code == 401
    for bad in (
        {"host": "-x"},
        {"host": "a/b"},
        {"gpu_classes": []},
        {"gpu_classes": ["A100"]},
        {"gpus": ["x"] * 65},
        {"cache": {"used_bytes": -1, "max_bytes": 1}},
        {"kinds": ["predictions"]},
    ):
        assert _heartbeat(world, class_job["headers"], **bad).status_code == 422, bad


def test_gpus_text_counts_one_model_and_lists_mixed_ones() -> None:
    assert gpus_text([]) == "none (CPU)"
    assert gpus_text(["NVIDIA L4"]) == "1 x NVIDIA L4"
    assert gpus_text(["NVIDIA L4", "NVIDIA A100"]) == "NVIDIA L4, NVIDIA A100"
