"""Applying a bundle on the server, all or nothing: the plan (app.bundles.plan) is computed from the database
and every step runs through the same services as the organiser API, inside the caller's one transaction.

Rules:
- One transaction: any refused step (a phase whose dates conflict, a test set whose path holds no valid set,
  a scoring change of a scored phase) raises, and the caller's transaction rolls back every earlier step. A
  refused bundle leaves no trace: no test set, challenge or phase, changed or new.
- The error names the step that was refused and why, e.g. ``create phase 'p2': closes_at: ...``.
- A dry run computes and validates the same way and rolls back (the caller's session is flushed, never
  committed by this module).
Never commits; must not import FastAPI.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from sqlalchemy.orm import Session

from app.admin import service as admin
from app.admin.schemas import TestSetCreate, TestSetRead
from app.bundles.plan import Step, make_plan
from app.bundles.schema import Bundle
from app.challenges import service as challenges
from app.challenges.schemas import ChallengeCreate, ChallengeUpdate, PhaseCreate, PhaseUpdate
from app.errors import AppError, InvalidInput
from app.tables import TestSet
from app.worker_hosts import service as workers


class BundleRefused(InvalidInput):
    """A step of the bundle was refused; nothing of the bundle is applied."""


def _schema(model: type[Any], body: dict[str, Any], step: Step) -> Any:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"]) or "(body)"
        raise BundleRefused(f"{step.summary}: {where}: {str(error['msg']).removeprefix('Value error, ')}") from None


def plan_for(session: Session, bundle: Bundle) -> list[Step]:
    """The steps that make this server match `bundle` (ValueError for a conflict no step resolves)."""
    current = [
        challenges.challenge_read(c).model_dump(mode="json")
        for c in challenges.list_challenges(session, include_unpublished=True)
    ]
    sets = [TestSetRead.model_validate(t).model_dump(mode="json") for t in session.query(TestSet).all()]
    return make_plan(bundle, challenges=current, test_sets=sets)


def apply_bundle(session: Session, bundle: Bundle, *, stale_after_s: float) -> list[str]:
    """Run every step of the plan in `session`; returns the steps' summaries. BundleRefused (422) or the
    refusing service's own error (409, 404), prefixed with the step, when any step is refused."""
    try:
        steps = plan_for(session, bundle)
    except ValueError as exc:
        raise BundleRefused(str(exc)) from None
    ids = _known_ids(session, bundle.challenge.slug)
    for step in steps:
        try:
            _run(session, step, ids, stale_after_s=stale_after_s)
            session.flush()
        except AppError as exc:
            if isinstance(exc, BundleRefused):
                raise
            refused = type(exc)(f"{step.summary}: {exc.message}; nothing of the bundle was applied")
            refused.headers = exc.headers
            raise refused from None
    return [step.summary for step in steps]


def _known_ids(session: Session, slug: str) -> dict[str, int]:
    ids = {f"test_set:{t.name}": t.id for t in session.query(TestSet).all()}
    for challenge in challenges.list_challenges(session, include_unpublished=True):
        if challenge.slug == slug:
            ids["challenge"] = challenge.id
            ids.update({f"phase:{p.slug}": p.id for p in challenge.phases})
    return ids


def _references(step: Step, ids: dict[str, int]) -> dict[str, int]:
    out = {}
    if "test_set" in step.refs:
        out["test_set_id"] = ids[f"test_set:{step.refs['test_set']}"]
    if "parent_phase" in step.refs:
        out["parent_phase_id"] = ids[f"phase:{step.refs['parent_phase']}"]
    return out


def _run(session: Session, step: Step, ids: dict[str, int], *, stale_after_s: float) -> None:
    body = {**step.body, **_references(step, ids)}
    if step.path == "/test-sets":
        created: Any = admin.register_test_set(session, data=_schema(TestSetCreate, body, step))
    elif step.method == "POST" and step.path == "/challenges":
        created = challenges.create_challenge(session, data=_schema(ChallengeCreate, body, step))
    elif step.path == "/challenges/{challenge}":
        challenge = challenges.get_challenge_by_id(session, challenge_id=ids["challenge"])
        challenges.update_challenge(session, challenge=challenge, data=_schema(ChallengeUpdate, body, step))
        return
    elif step.method == "POST":  # a new phase of the challenge
        data = _schema(PhaseCreate, body, step)
        workers.require_capable_workers(
            session, kinds=[k.value for k in data.allowed_kinds], stale_after_s=stale_after_s
        )
        challenge = challenges.get_challenge_by_id(session, challenge_id=ids["challenge"])
        created = challenges.create_phase(session, challenge=challenge, data=data)
    else:  # PATCH /phases/{id}
        phase_id = int(step.path.rsplit("/", 1)[1])
        phase = challenges.get_phase(session, phase_id=phase_id, include_unpublished=True)
        update = _schema(PhaseUpdate, body, step)
        if update.allowed_kinds is not None:
            added = [k.value for k in update.allowed_kinds if k.value not in phase.allowed_kinds]
            workers.require_capable_workers(session, kinds=added, stale_after_s=stale_after_s)
        challenges.update_phase(session, phase=phase, data=update, reevaluate=False)
        return
    if step.creates:
        ids[step.creates] = int(created.id)
