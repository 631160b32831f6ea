"""The organisers' audit log: every write through the organiser API, who made it, what and when.

Written in the same transaction as the change it records, so a change and its record land (or not) together.
Must not import FastAPI, Celery or torch.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.tables.base import Base, UTCDateTime, utcnow


class AuditEvent(Base):
    __tablename__ = "audit_event"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    token_id: Mapped[int | None] = mapped_column(ForeignKey("api_token.id", ondelete="SET NULL"))
    # the token's prefix and name as they were, kept should the token be deleted later
    actor: Mapped[str] = mapped_column(String(200))
    # e.g. "phase.update"
    action: Mapped[str] = mapped_column(String(100))
    # e.g. "phase 3"
    target: Mapped[str] = mapped_column(String(200))
    target_id: Mapped[int | None] = mapped_column(Integer)
    # the fields given in the request (never secrets: tokens and passwords are left out)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
