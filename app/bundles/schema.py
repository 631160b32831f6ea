"""What a challenge bundle may hold (format version 1): the challenge's fields, the test sets it uses (by name,
with their directory on the server) and its phases, whose test set and gating phase are named, not numbered.
Unknown keys are errors, as in the organiser API whose schemas these reuse."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from app.admin.schemas import TestSetCreate
from app.challenges.schemas import ChallengeCreate, PhaseCreate
from app.types import Slug, StrictInput


class BundlePhase(PhaseCreate):
    """A phase as the organiser API creates it, with its test set and parent phase named."""

    test_set: Annotated[str, Field(min_length=1, max_length=128)] | None = Field(
        default=None, description="The name of one of the bundle's test sets (or of one the server has)."
    )
    parent_phase: Slug | None = Field(default=None, description="Slug of an earlier phase that gates this one.")

    @model_validator(mode="after")
    def _named_not_numbered(self) -> BundlePhase:
        for numbered, named in (("test_set_id", "test_set"), ("parent_phase_id", "parent_phase")):
            if numbered in self.model_fields_set:
                raise ValueError(f"{numbered}: ids differ between servers; name it with {named}")
        return self


class Bundle(StrictInput):
    version: Literal[1] = Field(description="The bundle format; 1.")
    challenge: ChallengeCreate
    test_sets: list[TestSetCreate] = Field(default_factory=list)
    phases: list[BundlePhase] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> Bundle:
        names = [t.name for t in self.test_sets]
        if len(set(names)) != len(names):
            raise ValueError("test_sets: a name appears twice")
        slugs: list[str] = []
        for phase in self.phases:
            if phase.slug in slugs:
                raise ValueError(f"phases: {phase.slug!r} appears twice")
            if phase.parent_phase is not None and phase.parent_phase not in slugs:
                raise ValueError(
                    f"phases: {phase.slug!r} is gated by {phase.parent_phase!r}, which must come before it"
                )
            slugs.append(phase.slug)
        return self
