"""Registered test sets: where the manifest lives on the server and each case's group labels; and each set's
files by content (`TestSetFile`: inputs a GPU host may fetch, ground truth for the scoring role only)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.tables.base import Base, TimestampMixin


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


class TestSetFile(Base):
    """One file of a registered test set by content: its path in the set, SHA-256 and size. `role` is `input`
    (manifest.json and the case images, what a participant's run sees) or `truth` (ground-truth/, read by
    scoring only); worker.datasets.content names their objects under a prefix per role."""

    __tablename__ = "test_set_file"
    __test__ = False  # not a pytest test class
    __table_args__ = (UniqueConstraint("test_set_id", "path"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    test_set_id: Mapped[int] = mapped_column(ForeignKey("test_set.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(16))
    path: Mapped[str] = mapped_column(String(1024))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
