"""Challenges and phases: lookup, open/closed, create/update with consistency checks. Never commits."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from app.challenges.schemas import (
    ChallengeCreate,
    ChallengeRead,
    ChallengeUpdate,
    PhaseCreate,
    PhaseRead,
    PhaseUpdate,
)
from app.errors import Conflict, InvalidInput, NotFound
from app.models import Challenge, LeaderboardVisibility, Phase, TestSet, utcnow


def phase_is_open(phase: Phase, now: datetime | None = None) -> bool:
    now = now or utcnow()
    if phase.opens_at is not None and now < phase.opens_at:
        return False
    return not (phase.closes_at is not None and now >= phase.closes_at)


def scores_hidden_for(visibility: LeaderboardVisibility, closes_at: datetime | None, now: datetime) -> bool:
    """Whether participants and the public must not see a phase's leaderboard now (U7)."""
    if visibility is LeaderboardVisibility.PRIVATE:
        return True
    if visibility is LeaderboardVisibility.HIDDEN_UNTIL_CLOSE:
        return closes_at is None or now < closes_at
    return False


def scores_hidden(phase: Phase, now: datetime | None = None) -> bool:
    return scores_hidden_for(phase.leaderboard_visibility, phase.closes_at, now or utcnow())


def own_scores_hidden(phase: Phase, now: datetime | None = None) -> bool:
    """Whether a team must not see its own scores: only while a hidden-until-close phase is open."""
    return phase.leaderboard_visibility is LeaderboardVisibility.HIDDEN_UNTIL_CLOSE and scores_hidden(phase, now)


def phase_read(phase: Phase, now: datetime | None = None) -> PhaseRead:
    data = {c: getattr(phase, c) for c in PhaseRead.model_fields if c != "is_open"}
    return PhaseRead(**data, is_open=phase_is_open(phase, now))


def challenge_read(challenge: Challenge) -> ChallengeRead:
    now = utcnow()
    return ChallengeRead(
        id=challenge.id,
        slug=challenge.slug,
        title=challenge.title,
        description=challenge.description,
        requires_approval=challenge.requires_approval,
        is_published=challenge.is_published,
        phases=[phase_read(p, now) for p in challenge.phases],
    )


def list_challenges(session: Session, *, include_unpublished: bool = False) -> Sequence[Challenge]:
    stmt = select(Challenge).options(selectinload(Challenge.phases)).order_by(Challenge.id)
    if not include_unpublished:
        stmt = stmt.where(Challenge.is_published.is_(True))
    return session.scalars(stmt).all()


def get_challenge(session: Session, *, slug: str, include_unpublished: bool = False) -> Challenge:
    stmt = select(Challenge).options(selectinload(Challenge.phases)).where(Challenge.slug == slug)
    challenge = session.scalars(stmt).one_or_none()
    if challenge is None or (not challenge.is_published and not include_unpublished):
        raise NotFound(f"no challenge {slug!r}")
    return challenge


def get_challenge_by_id(session: Session, *, challenge_id: int) -> Challenge:
    challenge = session.get(Challenge, challenge_id)
    if challenge is None:
        raise NotFound(f"no challenge {challenge_id}")
    return challenge


def get_phase(session: Session, *, phase_id: int, include_unpublished: bool = False) -> Phase:
    phase = session.get(Phase, phase_id)
    if phase is None or (not phase.challenge.is_published and not include_unpublished):
        raise NotFound(f"no phase {phase_id}")
    return phase


def create_challenge(session: Session, *, data: ChallengeCreate) -> Challenge:
    if session.scalar(select(Challenge.id).where(Challenge.slug == data.slug)) is not None:
        raise Conflict(f"challenge {data.slug!r} exists")
    challenge = Challenge(**data.model_dump())
    session.add(challenge)
    _flush_or_conflict(session, f"challenge {data.slug!r} exists")
    return challenge


def update_challenge(session: Session, *, challenge: Challenge, data: ChallengeUpdate) -> Challenge:
    for key, value in data.model_dump(exclude_unset=True).items():
        if value is not None:
            setattr(challenge, key, value)
    session.flush()
    return challenge


def create_phase(session: Session, *, challenge: Challenge, data: PhaseCreate) -> Phase:
    fields = data.model_dump()
    fields["allowed_kinds"] = [k.value for k in data.allowed_kinds]
    exists = session.scalar(select(Phase.id).where(Phase.challenge_id == challenge.id, Phase.slug == data.slug))
    if exists is not None:
        raise Conflict(f"phase {data.slug!r} exists in this challenge")
    phase = Phase(challenge=challenge, **fields)
    with session.no_autoflush:  # the half-built phase must not be flushed by the checks' queries
        _check_phase(session, phase)
    session.add(phase)
    _flush_or_conflict(session, f"phase {data.slug!r} exists in this challenge")
    return phase


def update_phase(session: Session, *, phase: Phase, data: PhaseUpdate) -> Phase:
    changes: dict[str, Any] = data.model_dump(exclude_unset=True)
    not_nullable = {
        "title",
        "kind",
        "allowed_kinds",
        "failed_count_towards_quota",
        "max_active_per_team",
        "leaderboard_visibility",
        "entry_policy",
        "ranking_metric",
        "time_limit_s",
        "memory_limit_mb",
    }
    for key, value in changes.items():
        if value is None and key in not_nullable:
            raise InvalidInput(f"{key} cannot be null")
        if key == "allowed_kinds":
            value = [k.value if hasattr(k, "value") else k for k in value]
        setattr(phase, key, value)
    _check_phase(session, phase)
    session.flush()
    return phase


def _check_phase(session: Session, phase: Phase) -> None:
    if phase.opens_at is not None and phase.closes_at is not None and phase.closes_at <= phase.opens_at:
        raise InvalidInput("closes_at must be after opens_at")
    if phase.test_set_id is not None and session.get(TestSet, phase.test_set_id) is None:
        raise InvalidInput(f"test_set_id: no test set {phase.test_set_id}")
    if phase.parent_phase_id is not None:
        parent = session.get(Phase, phase.parent_phase_id)
        if parent is None or parent.challenge_id != phase.challenge.id:
            raise InvalidInput("parent_phase_id: no such phase in this challenge")
        if phase.id is not None and parent.id == phase.id:
            raise InvalidInput("parent_phase_id: a phase cannot gate itself")
        # Gating must end somewhere: two phases that require each other would be locked for everyone.
        seen = {phase.id, parent.id}
        ancestor = parent.parent_phase_id
        while ancestor is not None:
            if ancestor in seen:
                raise InvalidInput(f"parent_phase_id: phase {parent.id} is gated (through its parents) by this phase")
            seen.add(ancestor)
            found = session.get(Phase, ancestor)
            ancestor = found.parent_phase_id if found is not None else None


def _flush_or_conflict(session: Session, message: str) -> None:
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        raise Conflict(message) from None
