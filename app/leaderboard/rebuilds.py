"""Asking for a leaderboard rebuild: the only way a board becomes stale, and where its rebuild comes from.

A writer that changes what a phase's board shows calls `request_rebuild(session, phase_ids)` inside its
transaction (app.lifecycle does, for every such transition). That
- bumps the board's `generation` (one small row write: landing a result costs the same on a board of ten
  entries or ten thousand);
- marks a rebuild as queued (`rebuild_queued_at`) and, only when none was queued already, sends the task
  `standings.rebuild(phase_id=)` after commit (app.queue). So one rebuild per phase is in flight however many
  results land meanwhile: the rebuild clears the mark before it reads, and renders the newest generation.
A mark older than `STALE_MARK_S` (a message lost with a broker) no longer holds back a new one; the
reconciler's backstop (`app.leaderboard.standings.rebuild_stale`) rebuilds any board left stale anyway.

Nothing here computes a board: no request thread ever runs the bootstrap. Imports SQLAlchemy, app.tables and
app.queue only; must not import FastAPI, Celery, numpy or the worker.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import or_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app.queue import enqueue_after_commit
from app.tables import LeaderboardSnapshot, utcnow
from worker.vocabulary import REBUILD_STANDINGS, STANDINGS_QUEUE

STALE_MARK_S = 600.0


def mark_stale(session: Session, phase_ids: Iterable[int]) -> None:
    """Within the changing transaction: one more generation of data for each phase's board."""
    dialect = session.get_bind().dialect.name
    insert_fn = postgresql.insert if dialect == "postgresql" else sqlite.insert
    for phase_id in sorted(set(phase_ids)):
        statement = insert_fn(LeaderboardSnapshot).values(
            phase_id=phase_id,
            entries_json="[]",
            group_labels=[],
            entry_count=0,
            generation=1,
            built_generation=0,
            updated_at=utcnow(),
        )
        session.execute(
            statement.on_conflict_do_update(
                index_elements=["phase_id"], set_={"generation": LeaderboardSnapshot.generation + 1}
            )
        )


def request_rebuild(session: Session, phase_ids: Iterable[int], *, now: datetime | None = None) -> list[int]:
    """Make the phases' boards stale and have each rebuilt after commit, unless a rebuild is already queued.

    Returns the phases whose rebuild this call sends (the others have one in flight)."""
    phases = sorted(set(phase_ids))
    if not phases:
        return []
    now = now or utcnow()
    mark_stale(session, phases)
    # The row is locked by the upsert above (PostgreSQL) or the write transaction (SQLite): of two writers,
    # the second sees the first's mark once the first commits, so exactly one sends the rebuild.
    marked = session.execute(
        update(LeaderboardSnapshot)
        .where(
            LeaderboardSnapshot.phase_id.in_(phases),
            or_(
                LeaderboardSnapshot.rebuild_queued_at.is_(None),
                LeaderboardSnapshot.rebuild_queued_at < now - timedelta(seconds=STALE_MARK_S),
            ),
        )
        .values(rebuild_queued_at=now)
        .returning(LeaderboardSnapshot.phase_id)
    )
    sent = sorted(int(p) for p in marked.scalars())
    for phase_id in sent:
        enqueue_after_commit(session, REBUILD_STANDINGS, queue=STANDINGS_QUEUE, phase_id=phase_id)
    return sent


def take_mark(session: Session, phase_id: int) -> None:
    """The rebuild starts: later changes must queue another rebuild, since this one may read before them."""
    session.execute(
        update(LeaderboardSnapshot).where(LeaderboardSnapshot.phase_id == phase_id).values(rebuild_queued_at=None)
    )
