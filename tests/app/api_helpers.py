"""Typed helpers shared by the API tests (importable as `api_helpers`: tests/app is on sys.path)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from app import lifecycle
from app.challenges.service import scoring_fingerprint_of
from app.tables import Challenge, Evaluation, EvaluationStatus, Phase, TestSet

# Three small cases on two scanners; 1000 x 800 px at 0.00025 mm/px -> 0.25 x 0.2 mm.
# What a worker records (worker.provenance), as a test playing the worker writes it.
PLAYED_PROVENANCE: dict[str, Any] = {
    "recorded": True,
    "scorer_version": "1",
    "scoring_options": {"rules": "midog2022", "radius_mm": 0.0075, "group_key": "scanner"},
    "test_set": {"id": 1, "name": "synthetic", "scoring_digest": "d" * 64},
    "submission": {"kind": "predictions", "sha256": "5" * 64, "size_bytes": 10},
    "runtime": {"worker": "test-host:1", "scoring_seconds": 0.1},
}

CASES = [
    {"name": "001.tiff", "scanner": "A", "width": 1000, "height": 800, "spacing_mm": 0.00025},
    {"name": "002.tiff", "scanner": "A", "width": 1000, "height": 800, "spacing_mm": 0.00025},
    {"name": "003.tiff", "scanner": "B", "width": 1000, "height": 800, "spacing_mm": 0.00025},
]


def write_test_set(root: Path, cases: list[dict[str, Any]] = CASES) -> Path:
    """A test-set directory in the worker.datasets layout, with placeholder image files."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "ground-truth").mkdir(exist_ok=True)
    manifest_cases = []
    for c in cases:
        (root / "images" / c["name"]).write_bytes(b"II*\x00placeholder")
        manifest_cases.append(
            {
                "name": c["name"],
                "image": f"images/{c['name']}",
                "scanner": c["scanner"],
                "groups": {},
                "width": c["width"],
                "height": c["height"],
                "spacing_mm": c["spacing_mm"],
                "sha256": None,
            }
        )
    manifest = {"format": "midog-eval/test-set", "version": 1, "name": root.name, "cases": manifest_cases}
    (root / "manifest.json").write_text(json.dumps(manifest))
    truth = {c["name"]: [[0.05, 0.05, 0]] for c in cases}
    (root / "ground-truth" / "ground-truth.json").write_text(json.dumps(truth))
    return root


def predictions(points: dict[str, list[Any]] | None = None) -> bytes:
    """A valid predictions JSON for CASES (one point per case unless given)."""
    body = points or {c["name"]: [[0.05, 0.05, 0]] for c in CASES}
    return json.dumps(
        {
            name: {"type": "Multiple points", "points": [{"point": p, "probability": 0.9} for p in pts]}
            for name, pts in body.items()
        }
    ).encode()


PASSWORD = "midog-test-passphrase"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class World:
    """A published challenge with an open phase on a registered synthetic test set."""

    db: Session
    client: TestClient
    organiser_token: str
    challenge: Challenge
    phase: Phase
    test_set: TestSet

    def admin(self) -> dict[str, str]:
        return bearer(self.organiser_token)

    def register(self, name: str) -> dict[str, Any]:
        r = self.client.post(
            "/api/v1/auth/register",
            json={
                "team_name": name,
                "email": f"{re.sub(r'[^a-z0-9]', '', name.lower()) or 'team'}@example.org",
                "password": PASSWORD,
            },
        )
        assert r.status_code == 201, r.text
        body: dict[str, Any] = r.json()
        body["headers"] = bearer(body["token"]["token"])
        return body

    def join(self, team: dict[str, Any], email: str) -> dict[str, Any]:
        """A second member: invited by `team`, joining with their own password; returns the join result."""
        invited = self.client.post("/api/v1/teams/me/invitations", headers=team["headers"], json={"email": email})
        assert invited.status_code == 201, invited.text
        r = self.client.post(
            "/api/v1/auth/join", json={"invitation": invited.json()["token"], "email": email, "password": PASSWORD}
        )
        assert r.status_code == 201, r.text
        body: dict[str, Any] = r.json()
        body["headers"] = bearer(body["token"]["token"])
        return body

    def submit(
        self,
        headers: dict[str, str],
        content: bytes | None = None,
        *,
        phase_id: int | None = None,
        kind: str = "predictions",
        filename: str = "predictions.json",
        data: dict[str, str] | None = None,
    ) -> Any:
        return self.client.post(
            f"/api/v1/phases/{phase_id or self.phase.id}/submissions",
            params={"kind": kind},
            headers=headers,
            files={"file": (filename, predictions() if content is None else content)},
            data=data or {},
        )

    def add_phase(self, slug: str, **fields: Any) -> Phase:
        phase = Phase(challenge=self.challenge, slug=slug, title=slug, test_set_id=self.test_set.id, **fields)
        self.db.add(phase)
        self.db.flush()
        phase.scoring_fingerprint = scoring_fingerprint_of(self.db, phase)
        self.db.commit()
        return phase

    def set_phase(self, **fields: Any) -> dict[str, Any]:
        """Change the phase as the organisers do (PATCH /admin/phases/<id>): its board follows."""
        body = {k: (v.value if hasattr(v, "value") else v) for k, v in fields.items()}
        r = self.client.patch(f"/api/v1/admin/phases/{self.phase.id}", json=body, headers=self.admin())
        assert r.status_code == 200, r.text
        self.db.expire_all()
        return dict(r.json())

    def finish(
        self,
        submission_id: int,
        *,
        f1: float = 0.5,
        status: EvaluationStatus = EvaluationStatus.SUCCEEDED,
        cases: dict[str, dict[str, int]] | None = None,
        groups: dict[str, Any] | None = None,
        ap: float | None = 0.4,
    ) -> Evaluation:
        """Play the worker: claim the submission's evaluation and end it through app.lifecycle, as the worker
        does (a result when it succeeded; its board is rebuilt after commit)."""
        self.db.expire_all()
        ev = self.db.scalars(
            select(Evaluation).where(Evaluation.submission_id == submission_id).order_by(Evaluation.version.desc())
        ).first()
        assert ev is not None
        run = lifecycle.claim(self.db, evaluation_id=ev.id, owner="test:1", lease_s=600, max_attempts=100)
        assert run.claimed, run
        held = {"evaluation_id": ev.id, "owner": run.owner, "attempt": run.attempt}
        if status is EvaluationStatus.FAILED:
            assert lifecycle.fail(
                self.db, **held, message="time limit exceeded", detail="Traceback: secret organiser detail"
            )
        elif status is EvaluationStatus.SUCCEEDED:
            scores = {
                "tp": 10,
                "fp": 2,
                "fn": 3,
                "precision": 0.8,
                "recall": 0.7,
                "f1": f1,
                "ap": ap,
                "f1_ci_low": f1 - 0.1,
                "f1_ci_high": f1 + 0.1,
                "groups": groups
                if groups is not None
                else {
                    "A": {"tp": 6, "fp": 1, "fn": 2, "f1": f1 + 0.05},
                    "B": {"tp": 4, "fp": 1, "fn": 1, "f1": f1 - 0.05},
                },
                "cases": cases if cases is not None else {c["name"]: {"tp": 3, "fp": 1, "fn": 1} for c in CASES},
                "intervals": {"f1": [f1 - 0.1, f1 + 0.1], "precision": [0.7, 0.9], "recall": [0.6, 0.8]},
                "scoring_fingerprint": ev.submission.phase.scoring_fingerprint,
                "provenance": PLAYED_PROVENANCE,
            }
            assert lifecycle.succeed(self.db, **held, scores=scores)
        else:
            raise ValueError(f"finish() plays a run that ends succeeded or failed, not {status}")
        self.db.commit()
        self.db.expire_all()  # the lifecycle wrote with statements: the loaded rows are stale
        return ev
