"""The log tails of a submission's runs (the last lines of each case's stdout and stderr, kept by the workers
under settings.storage_dir, app.storage.evaluation_logs_dir), as organisers and participants read them.

Rules: organisers always read them; the submitting team only where the phase's `show_logs` is on, since a
log can carry anything the program printed, values of a hidden test set included. Without it the team has
the evaluation's one failure line and nothing else. Never commits. Must not import FastAPI.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from sqlalchemy.orm import Session

from app.errors import Forbidden, NotFound
from app.storage import evaluation_logs_dir
from app.submissions.schemas import CaseLog, SubmissionLogs
from app.submissions.service import current_evaluation, get_team_submission
from app.tables import Submission, SubmissionKind

LIST_TAIL_BYTES = 64 * 1024  # per case in a listing; one case at a time gives all that was kept
NOT_SHOWN = "this phase does not show run logs to participants; the failure line is what it shows"


def logs_shown(submission: Submission) -> bool:
    """Whether the submitting team may read this submission's run logs (the phase's policy)."""
    return bool(submission.phase.show_logs) and submission.kind is not SubmissionKind.PREDICTIONS


def check_participant_may_read(submission: Submission) -> None:
    if submission.kind is SubmissionKind.PREDICTIONS:
        raise NotFound("a predictions file runs no program: it has no logs")
    if not logs_shown(submission):
        raise Forbidden(NOT_SHOWN)


def read_logs(submission: Submission, *, storage_dir: Path, case: str | None = None) -> SubmissionLogs:
    """The kept log tails of the current evaluation: every case (the last LIST_TAIL_BYTES of each), or all
    that was kept of one `case`. Only plain files directly in the evaluation's directory are read."""
    ev = current_evaluation(submission)
    if ev is None:
        return SubmissionLogs(submission_id=submission.id, evaluation_id=None, cases=[])
    directory = evaluation_logs_dir(storage_dir, ev.id)
    names = sorted(p.name[: -len(".log")] for p in _entries(directory))
    if case is not None:
        if case not in names:
            raise NotFound(f"no log kept for case {case!r} of submission {submission.id}")
        names = [case]
    limit = None if case is not None else LIST_TAIL_BYTES
    cases = [_read(directory / f"{name}.log", name, limit) for name in names]
    return SubmissionLogs(submission_id=submission.id, evaluation_id=ev.id, cases=[c for c in cases if c])


def _entries(directory: Path) -> list[Path]:
    try:
        return [p for p in directory.iterdir() if p.name.endswith(".log") and not p.name.startswith(".")]
    except OSError:
        return []


def _read(path: Path, name: str, limit: int | None) -> CaseLog | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            return None
        start = 0 if limit is None else max(0, info.st_size - limit)
        handle.seek(start)
        data = handle.read()
    return CaseLog(case=name, bytes=info.st_size, truncated=start > 0, log=data.decode("utf-8", "replace"))


def read_team_logs(
    session: Session, *, submission_id: int, team_id: int, storage_dir: Path, case: str | None
) -> SubmissionLogs:
    """The run logs of one of the team's submissions, where its phase shows them (403 otherwise)."""
    submission = get_team_submission(session, submission_id=submission_id, team_id=team_id)
    check_participant_may_read(submission)
    return read_logs(submission, storage_dir=storage_dir, case=case)
