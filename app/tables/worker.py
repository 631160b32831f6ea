"""Workers as they report themselves: queues, what they can run, and when they were last seen.

Each worker process upserts its row (by Celery node name) at start-up and refreshes `last_seen_at` on a
heartbeat; a clean shutdown sets `stopped_at`. The API reads these rows for /api/v1/health, for the
organisers' worker list, and to refuse a phase that accepts a submission kind no running worker can run.
Must not import FastAPI, Celery or torch.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.tables.base import Base, UTCDateTime, utcnow


class WorkerNode(Base):
    __tablename__ = "worker_node"

    id: Mapped[int] = mapped_column(primary_key=True)
    # Celery's node name, e.g. gpu@host: unique per running worker; a restart under the same name reuses the row
    name: Mapped[str] = mapped_column(String(200), unique=True)
    hostname: Mapped[str] = mapped_column(String(200), default="")
    pid: Mapped[int] = mapped_column(Integer, default=0)
    # comma-separated queues it consumes (cpu, gpu)
    queues: Mapped[str] = mapped_column(String(100), default="")
    # {"kinds": [...], "problems": {kind: line}, "isolation": {control: bool}, "allowed_missing_controls": [...]}
    capabilities: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    @property
    def kinds(self) -> list[str]:
        return [str(kind) for kind in (self.capabilities or {}).get("kinds", [])]
