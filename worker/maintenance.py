"""The sweeper: periodic removal of what interrupted work leaves behind (task `maintenance.sweep`, run by beat).

Removed when older than `sweep_after_s` (modification time):
- `<storage>/tmp/*.part`: uploads whose request died mid-body (an API killed or restarted);
- `<storage>/test-sets/.incoming-*`: organiser test-set archives whose unpacking was interrupted;
- `<data_dir>/work/evaluation-<id>`: work directories of evaluations that are finished (or gone); those of
  queued, running or retrying evaluations stay, whatever their age.
Directories are deleted with worker.safe_delete, which never crosses a mount point. The sweep is idempotent
and cheap (a directory listing and one query), so several beats sweeping the same storage do no harm.

Imports Celery, SQLAlchemy, app.db/app.tables/app.settings and the worker; never FastAPI or torch.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from sqlalchemy import select

from app.db import session_scope
from app.settings import get_settings
from app.tables import ACTIVE_STATUSES, Evaluation
from worker.celery_app import app
from worker.safe_delete import discard_tree
from worker.vocabulary import SWEEP

logger = logging.getLogger(__name__)

UPLOAD_TMP = "tmp"
TEST_SETS = "test-sets"
_WORK_DIR = re.compile(r"^evaluation-(\d+)$")


@dataclass
class SweepReport:
    uploads: list[str] = field(default_factory=list)
    incoming: list[str] = field(default_factory=list)
    work: list[str] = field(default_factory=list)


def _older(paths: Iterable[Path], cutoff: float) -> list[Path]:
    found = []
    for path in paths:
        try:
            if path.lstat().st_mtime < cutoff:
                found.append(path)
        except FileNotFoundError:
            continue
    return found


def _active_evaluations(ids: list[int]) -> set[int]:
    if not ids:
        return set()
    with session_scope() as session:
        query = select(Evaluation.id).where(Evaluation.id.in_(ids), Evaluation.status.in_(ACTIVE_STATUSES))
        return set(session.scalars(query))


def sweep(
    *,
    storage_dir: Path,
    data_dir: Path,
    older_than_s: float,
    active: Callable[[list[int]], set[int]] = _active_evaluations,
    now: float | None = None,
) -> SweepReport:
    """Remove stale leftovers (see the module docstring); returns what was removed."""
    cutoff = (time.time() if now is None else now) - older_than_s
    report = SweepReport()
    tmp = storage_dir / UPLOAD_TMP
    if tmp.is_dir():
        for path in _older(tmp.glob("*.part"), cutoff):
            path.unlink(missing_ok=True)
            report.uploads.append(path.name)
    sets = storage_dir / TEST_SETS
    if sets.is_dir():
        for path in _older(sets.glob(".incoming-*"), cutoff):
            if discard_tree(path):
                report.incoming.append(path.name)
    work = data_dir / "work"
    if work.is_dir():
        candidates = {int(m.group(1)): p for p in _older(work.iterdir(), cutoff) if (m := _WORK_DIR.match(p.name))}
        running = active(sorted(candidates))
        for evaluation_id, path in sorted(candidates.items()):
            if evaluation_id not in running and discard_tree(path):
                report.work.append(path.name)
    return report


@cast(Callable[[Callable[..., Any]], Any], app.task(name=SWEEP))
def sweep_task() -> dict[str, list[str]]:
    settings = get_settings()
    report = sweep(storage_dir=settings.storage_path, data_dir=settings.data_dir, older_than_s=settings.sweep_after_s)
    if report.uploads or report.incoming or report.work:
        logger.info("sweep removed %s", report)
    return {"uploads": report.uploads, "incoming": report.incoming, "work": report.work}
