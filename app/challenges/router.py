"""Public challenge and phase listings (HTTP only; logic in service.py)."""

from __future__ import annotations

from fastapi import APIRouter

from app.challenges import service
from app.challenges.schemas import ChallengeRead, PhaseRead
from app.deps import DbSession
from app.openapi import errors
from app.types import IdPath, Slug

router = APIRouter(prefix="/api/v1", tags=["challenges"], responses=errors(404, 422, 503))


@router.get("/challenges", summary="List published challenges and their phases")
def list_challenges(db: DbSession) -> list[ChallengeRead]:
    return [service.challenge_read(c) for c in service.list_challenges(db)]


@router.get("/challenges/{slug}", summary="One challenge and its phases")
def get_challenge(db: DbSession, slug: Slug) -> ChallengeRead:
    return service.challenge_read(service.get_challenge(db, slug=slug))


@router.get("/phases/{phase_id}", summary="One phase: schedule, quotas, policies")
def get_phase(db: DbSession, phase_id: IdPath) -> PhaseRead:
    return service.phase_read(service.get_phase(db, phase_id=phase_id))
