"""Test sets by content in the database: `record_content` stores a set's files at registration (one
`TestSetFile` row each); `input_manifest` is what a GPU host may learn of a set (the inputs' relative paths,
hashes, sizes and object keys, no server path and nothing of the ground truth); `truth_manifest` is the
scoring role's. Never commits. Must not import FastAPI."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.errors import NotFound
from app.tables import TestSet, TestSetFile

if TYPE_CHECKING:
    from worker.datasets.content import Role, TestSetContent


def record_content(session: Session, test_set: TestSet, content: TestSetContent) -> None:
    """Add a row per file of the set (inputs and ground truth, told apart by role)."""
    for role in ("input", "truth"):
        for item in content.files(role):
            session.add(
                TestSetFile(test_set_id=test_set.id, role=role, path=item.path, sha256=item.sha256, size=item.size)
            )
    session.flush()


def _manifest(session: Session, test_set_id: int, role: Role) -> dict[str, Any]:
    from worker.datasets.content import object_key

    if session.get(TestSet, test_set_id) is None:
        raise NotFound(f"no test set {test_set_id}")
    rows = session.scalars(
        select(TestSetFile)
        .where(TestSetFile.test_set_id == test_set_id, TestSetFile.role == role)
        .order_by(TestSetFile.path)
    ).all()
    files = [{"path": r.path, "sha256": r.sha256, "size": r.size, "object": object_key(role, r.sha256)} for r in rows]
    return {"test_set": test_set_id, "files": files, "bytes": sum(r.size for r in rows)}


def input_manifest(session: Session, test_set_id: int) -> dict[str, Any]:
    """The files a run of the set reads (manifest.json and the images): what a GPU host fetches and caches."""
    return _manifest(session, test_set_id, "input")


def truth_manifest(session: Session, test_set_id: int) -> dict[str, Any]:
    """The ground-truth files of the set, for the scoring role only."""
    return _manifest(session, test_set_id, "truth")
