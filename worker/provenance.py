"""How a result was produced (stored as Result.provenance), and the check of the test set before a run.

Every result records: the scorer version and this software's version; the scoring options in full and the
sha256 of the scored ones; the test set (id, name, scoring digest); the submission (kind, sha256, size); the
runtime (worker, runner, backend, device, image, durations). Its scoring fingerprint (app.scoring) decides
whether it may be ranked on its phase's board.

Imports the standard library, app.scoring, worker.errors and worker.datasets only; never Celery, SQLAlchemy
or FastAPI.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

from app.scoring import SCORER_VERSION, fingerprint, options_sha256
from worker.datasets.manifest import scoring_digest
from worker.errors import InfrastructureError


@dataclass(frozen=True)
class ScoringBasis:
    """What one evaluation is scored under, read with it from the database (plain values)."""

    options: dict[str, Any]  # app.scoring.canonical_options of the phase
    test_set_id: int
    test_set_name: str
    test_set_digest: str  # as registered
    phase_fingerprint: str | None
    submission_kind: str
    submission_sha256: str
    submission_bytes: int
    # a container submission's model tarball (weights apart from the image)
    model_sha256: str | None = None

    @property
    def fingerprint(self) -> str:
        """The fingerprint of a result scored here now (this worker's scorer version)."""
        return fingerprint(self.options, self.test_set_digest)


def check_test_set(directory: Path, basis: ScoringBasis) -> None:
    """Refuse to score on a test set whose manifest or ground truth changed on disk since registration."""
    try:
        actual = scoring_digest(directory)
    except OSError as exc:
        raise InfrastructureError(f"test set {basis.test_set_name!r}: cannot read {directory} ({exc})") from exc
    if actual != basis.test_set_digest:
        raise InfrastructureError(
            f"test set {basis.test_set_name!r} changed on disk since it was registered (scoring digest "
            f"{actual[:12]} instead of {basis.test_set_digest[:12]}): register the new content as a new test set "
            "and move the phase to it, or restore the registered files"
        )


def provenance(basis: ScoringBasis, *, runtime: dict[str, Any]) -> dict[str, Any]:
    """The provenance record of a result scored under `basis`; `runtime` as the task measured it."""
    return {
        "recorded": True,
        "scorer_version": SCORER_VERSION,
        "software": {"midog_eval": _package_version(), "python": platform.python_version()},
        "scoring_options": basis.options,
        "scoring_options_sha256": options_sha256(basis.options),
        "test_set": {"id": basis.test_set_id, "name": basis.test_set_name, "scoring_digest": basis.test_set_digest},
        "submission": {
            "kind": basis.submission_kind,
            "sha256": basis.submission_sha256,
            "size_bytes": basis.submission_bytes,
            **({"model_sha256": basis.model_sha256} if basis.model_sha256 else {}),
        },
        "runtime": runtime,
    }


@cache
def _package_version() -> str:
    try:
        return metadata.version("midog-eval")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"
