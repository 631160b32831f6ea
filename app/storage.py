"""Files that belong to a transaction: moved into storage now, removed again if the transaction rolls back.

`move_into_storage(session, source, destination)` renames an upload into its final place and remembers it on
the session; a rollback of that session (a refused quota, a failed commit, any exception of the request)
deletes the file, and a commit forgets it. So a failed upload never leaves a file without its row. (A
process killed between the rename and the commit can still leave one; the upload's `.part` temp files of
killed requests are removed by the worker's sweeper.) Must not import FastAPI.
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction

_PENDING = "midog_files_pending_commit"


def evaluation_logs_dir(storage_dir: Path, evaluation_id: int) -> Path:
    """Where the workers keep the log tails of one evaluation's runs (`<case>.log`, worker.pipeline.keep_logs)
    and the API reads them."""
    return storage_dir / "logs" / f"evaluation-{evaluation_id}"


def runner_upload_dir(data_dir: Path, evaluation_id: int, attempt: int) -> Path:
    """Where the API keeps what a GPU host uploaded for one attempt (predictions.json, features.json, run.json)
    and the scoring task reads it (app.runner, worker.tasks)."""
    return data_dir / "work" / f"evaluation-{evaluation_id}" / "uploads" / f"attempt-{attempt}"


def move_into_storage(session: Session, source: Path, destination: Path) -> None:
    """Atomically rename `source` to `destination` (same file system), undone by a rollback of `session`."""
    session.connection()  # a transaction is open, so that its rollback is seen
    destination.parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, destination)
    pending: list[Path] = session.info.setdefault(_PENDING, [])
    pending.append(destination)
    if not event.contains(session, "after_commit", _forget):
        event.listen(session, "after_commit", _forget)
        event.listen(session, "after_soft_rollback", _remove)


def _forget(session: Session) -> None:
    if session.in_nested_transaction():  # a savepoint released; the outer transaction may still roll back
        return
    session.info.pop(_PENDING, None)


def _remove(session: Session, previous: SessionTransaction) -> None:
    if previous.nested:  # a savepoint rolled back; the outer transaction may still commit
        return
    for path in session.info.pop(_PENDING, []):
        path.unlink(missing_ok=True)
