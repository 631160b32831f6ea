"""Standings: each phase's leaderboard, rendered after a result lands or anything that decides the board
changes (app.leaderboard.standings), so that serving it is one single-row query and no re-serialisation.
`generation` counts the changes to the board's data, `built_generation` the one the stored board shows."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Integer, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.tables.base import Base, UTCDateTime, utcnow


class LeaderboardSnapshot(Base):
    __tablename__ = "leaderboard_snapshot"

    phase_id: Mapped[int] = mapped_column(ForeignKey("phase.id", ondelete="CASCADE"), primary_key=True)
    # the JSON array of LeaderboardEntry objects exactly as served (groups already filtered to shown_groups)
    entries_json: Mapped[str] = mapped_column(Text)
    group_labels: Mapped[list[str]] = mapped_column(JSON)
    entry_count: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    built_generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # the board's ranking analysis (app.leaderboard.analysis) as served, built with the entries
    analysis_json: Mapped[str] = mapped_column(Text, default="{}", server_default="{}")
    # set when a rebuild task was sent and has not started yet (app.leaderboard.rebuilds): one in flight
    rebuild_queued_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
