"""Standings: the ranked leaderboard rows of each phase, rebuilt whenever a result lands or anything that
decides the board changes (app.leaderboard.standings), so that serving the board is one cheap query."""

from __future__ import annotations

from sqlalchemy import Float, ForeignKey, Integer, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base


class LeaderboardEntry(Base):
    __tablename__ = "leaderboard_entry"
    __table_args__ = (UniqueConstraint("phase_id", "result_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    phase_id: Mapped[int] = mapped_column(ForeignKey("phase.id", ondelete="CASCADE"), index=True)
    result_id: Mapped[int] = mapped_column(ForeignKey("result.id", ondelete="CASCADE"), index=True)
    # display order; rank is shared by ties and null for baselines
    position: Mapped[int] = mapped_column(Integer)
    rank: Mapped[int | None] = mapped_column(Integer)
    score: Mapped[float | None] = mapped_column(Float)
