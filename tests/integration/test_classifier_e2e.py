"""A classifier archive submitted through the API of `midog-eval serve` (embedded default, its own gpu worker)
to a MIDOG 2025 Track 2 phase is run in the bwrap sandbox and ends on the board with the balanced accuracy,
ROC AUC and per-domain balanced accuracy of its direct run (`python -m worker.inference.run`) scored by the
scoring core; a detector archive is refused at upload with the line naming manifest.json's task."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.classification_set import STACKS, write_classification_set, write_toy_classifier
from tests.integration.conftest import REPO_ROOT, require_bwrap
from tests.integration.test_model_archive_e2e import _wait_for_result, _wait_on_board, serve_with_gpu_worker
from worker.evaluation.classification import (
    ClassificationReport,
    evaluate_classification,
    read_ground_truth,
    read_predictions,
)
from worker.reference.export import zip_archive

pytestmark = pytest.mark.slow


def _direct_report(archive: Path, test_set: Path, out: Path) -> ClassificationReport:
    done = subprocess.run(
        [
            *(sys.executable, "-m", "worker.inference.run", "--archive", str(archive)),
            *("--images", str(test_set), "--output", str(out), "--device", "cpu"),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    patches = {name: len(labels) for name, (_domain, labels) in STACKS.items()}
    return evaluate_classification(
        read_ground_truth(test_set / "ground-truth" / "ground-truth.json"), read_predictions(out, patches)
    )


def test_a_classifier_archive_submitted_through_the_api_scores_as_its_direct_run(
    tmp_path: Path, sandbox_runtime_dir: Path, reference_cnn_zip: Path
) -> None:
    require_bwrap()
    stacks = write_classification_set(tmp_path / "track2")
    classifier = zip_archive(write_toy_classifier(tmp_path / "toy"), tmp_path / "toy.zip")
    started = time.monotonic()
    with serve_with_gpu_worker(tmp_path, sandbox_runtime_dir) as server:
        admin = server.organiser()
        with httpx.Client(base_url=server.base, timeout=30) as client:
            test_set = client.post(
                "/api/v1/admin/test-sets", json={"name": "track2", "path": str(stacks)}, headers=admin
            )
            assert test_set.status_code == 201, test_set.text
            assert test_set.json()["task"] == "classification"
            challenge = client.post("/api/v1/admin/challenges", json={"slug": "t2", "title": "T2"}, headers=admin)
            phase = client.post(
                f"/api/v1/admin/challenges/{challenge.json()['id']}/phases",
                json={
                    "slug": "atypical",
                    "title": "Atypical",
                    "test_set_id": test_set.json()["id"],
                    "allowed_kinds": ["model"],
                    "scoring_options": {"task": "classification"},
                },
                headers=admin,
            )
            assert phase.status_code == 201, phase.text
            phase_id = phase.json()["id"]
            team = client.post(
                "/api/v1/auth/register",
                json={"team_name": "Mitosis", "email": "mitosis@example.org", "password": "a-long-password"},
            ).json()
            headers = {"Authorization": f"Bearer {team['token']['token']}"}

            detector = client.post(
                f"/api/v1/phases/{phase_id}/submissions",
                params={"kind": "model"},
                headers=headers,
                files={"file": ("detector.zip", reference_cnn_zip.read_bytes())},
            )
            assert detector.status_code == 422, detector.text
            assert detector.json()["detail"].startswith(
                "manifest.json: task: the archive is a detection model, but a classification phase needs a classifier"
            )

            submitted = client.post(
                f"/api/v1/phases/{phase_id}/submissions",
                params={"kind": "model"},
                headers=headers,
                files={"file": ("classifier.zip", classifier.read_bytes())},
            )
            assert submitted.status_code == 201, submitted.text
            _wait_for_result(client, headers, submitted.json()["id"], server)
            board = _wait_on_board(client, phase_id, submitted.json()["id"])
        entries = [e for e in board["entries"] if e["submission_id"] == submitted.json()["id"]]
        assert len(entries) == 1, board
        entry = entries[0]
        assert not list((sandbox_runtime_dir / "bwrap").glob("*/*")), "the sandboxed run left state behind"
    elapsed = time.monotonic() - started

    direct = _direct_report(classifier, stacks, tmp_path / "direct")
    overall = direct.overall
    assert overall.tp + overall.fp > 0, "no patch called atypical: a vacuous comparison"
    assert overall.tn + overall.fn > 0, "no patch called normal: a vacuous comparison"
    assert entry["balanced_accuracy"] == pytest.approx(overall.balanced_accuracy, abs=1e-12)
    assert entry["roc_auc"] == pytest.approx(overall.roc_auc, abs=1e-12)
    domains = direct.domains
    assert sorted(entry["groups"]) == sorted(domains)
    for label, scores in domains.items():
        assert entry["groups"][label]["balanced_accuracy"] == pytest.approx(scores.balanced_accuracy, abs=1e-12)
    print(f"serve + sandboxed classifier archive on the board in {elapsed:.1f} s")
