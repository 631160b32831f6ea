"""Registered test sets: where the manifest lives on the server and each case's group labels."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, TimestampMixin


class TestSet(TimestampMixin, Base):
    __tablename__ = "test_set"
    __test__ = False  # not a pytest test class

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    # server path of manifest.json (the ground truth lies beside it, never where participant code can see)
    manifest_path: Mapped[str] = mapped_column(String(1024))
    manifest_sha256: Mapped[str] = mapped_column(String(64))
    # worker.datasets.manifest.scoring_digest at registration (manifest and ground truth); workers check it
    # before scoring, so a set edited on disk since is never scored under the registered name
    scoring_digest: Mapped[str] = mapped_column(String(64))
    # detection or classification (the manifest's task); a phase scores only test sets of its own task
    task: Mapped[str] = mapped_column(String(32), default="detection", server_default="detection")
    case_count: Mapped[int] = mapped_column(Integer)
    # case name -> {"width": px, "height": px, "spacing_mm": mm/px, "groups": {key: label}}
    cases: Mapped[dict[str, Any]] = mapped_column(JSON)
