"""Challenges and phases: lookup, open/closed, create/update with consistency checks. Never commits."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from app import lifecycle
from app.challenges.schemas import (
    ChallengeCreate,
    ChallengeRead,
    ChallengeUpdate,
    PhaseCreate,
    PhaseRead,
    PhaseUpdate,
)
from app.errors import Conflict, InvalidInput, NotFound
from app.scoring import canonical_options, changed_scored_options, fingerprint
from app.tables import (
    ACTIVE_STATUSES,
    Challenge,
    Evaluation,
    EvaluationStatus,
    LeaderboardVisibility,
    Phase,
    RankingMetric,
    Submission,
    TestSet,
    utcnow,
)

# What each task can rank by; the first is the default.
RANKING_METRICS = {
    "detection": (RankingMetric.F1, RankingMetric.AP, RankingMetric.PRECISION, RankingMetric.RECALL),
    "classification": (
        RankingMetric.BALANCED_ACCURACY,
        RankingMetric.ROC_AUC,
        RankingMetric.F1,
        RankingMetric.PRECISION,
        RankingMetric.RECALL,
    ),
}


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
    if "ranking_metric" not in data.model_fields_set:  # each task's own default (F1; balanced accuracy)
        fields["ranking_metric"] = RANKING_METRICS[canonical_options(fields["scoring_options"])["task"]][0]
    if fields["show_logs"] is None:  # logs are for phases whose cases are public, unless the organiser says
        fields["show_logs"] = not canonical_options(fields["scoring_options"])["hidden"]
    phase = Phase(challenge=challenge, **fields)
    with session.no_autoflush:  # the half-built phase must not be flushed by the checks' queries
        _check_phase(session, phase)
        phase.scoring_fingerprint = scoring_fingerprint_of(session, phase)
    session.add(phase)
    _flush_or_conflict(session, f"phase {data.slug!r} exists in this challenge")
    return phase


def update_phase(session: Session, *, phase: Phase, data: PhaseUpdate, reevaluate: bool = False) -> bool:
    """Apply the given fields; True when the phase's submissions must now be re-evaluated (the caller does it).

    A change of scoring (scored options, test set, or the scorer itself since the phase was last scored) on a
    phase with submissions scored or being scored is refused (Conflict, saying why and what to do) unless
    `reevaluate`: results produced differently must never be ranked side by side.
    """
    changes: dict[str, Any] = data.model_dump(exclude_unset=True)
    scoring_before = (dict(phase.scoring_options or {}), phase.test_set_id, phase.scoring_fingerprint)
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
        "scoring_options",
        "show_logs",
        "run_mode",
        "gpu_class",
    }
    for key, value in changes.items():
        if value is None and key in not_nullable:
            raise InvalidInput(f"{key} cannot be null")
        if key == "allowed_kinds":
            value = [k.value if hasattr(k, "value") else k for k in value]
        if key == "scoring_options":  # the options given change, the others keep their value
            value = canonical_options({**(phase.scoring_options or {}), **value})
        setattr(phase, key, value)
    _check_phase(session, phase)
    rescore = False
    if "scoring_options" in changes or "test_set_id" in changes:
        rescore = _rescore_needed(session, phase, *scoring_before, confirmed=reevaluate)
    session.flush()
    scoring_fields = {"scoring_fingerprint"} if phase.scoring_fingerprint != scoring_before[2] else set()
    lifecycle.phase_rules_changed(session, phase=phase, changed=set(changes) | scoring_fields)
    return rescore


def scoring_fingerprint_of(session: Session, phase: Phase) -> str | None:
    """The fingerprint this phase's results get when scored now: current scorer, options and test set."""
    test_set = session.get(TestSet, phase.test_set_id) if phase.test_set_id is not None else None
    return None if test_set is None else fingerprint(phase.scoring_options, test_set.scoring_digest)


def scored_submissions(session: Session, phase: Phase) -> int:
    """Submissions of the phase's current evaluation version that are scored or being scored."""
    counted = {EvaluationStatus.SUCCEEDED, *ACTIVE_STATUSES}
    return int(
        session.scalar(
            select(func.count())
            .select_from(Evaluation)
            .join(Submission, Submission.id == Evaluation.submission_id)
            .where(
                Submission.phase_id == phase.id,
                Evaluation.version == phase.evaluation_version,
                Evaluation.status.in_(counted),
            )
        )
        or 0
    )


def _rescore_needed(
    session: Session,
    phase: Phase,
    old_options: dict[str, Any],
    old_test_set_id: int | None,
    old_fingerprint: str | None,
    *,
    confirmed: bool,
) -> bool:
    new_fingerprint = scoring_fingerprint_of(session, phase)
    if new_fingerprint == old_fingerprint:
        return False
    scored = scored_submissions(session, phase)
    if scored and not confirmed:
        reasons = [f"scoring_options.{name}" for name in changed_scored_options(old_options, phase.scoring_options)]
        old_set = session.get(TestSet, old_test_set_id) if old_test_set_id is not None else None
        new_set = session.get(TestSet, phase.test_set_id) if phase.test_set_id is not None else None
        if old_set is None or new_set is None or old_set.scoring_digest != new_set.scoring_digest:
            reasons.append("test_set_id")
        if old_set is not None and fingerprint(old_options, old_set.scoring_digest) != old_fingerprint:
            reasons.append("the scorer version (this server scores differently from when the phase was scored)")
        raise Conflict(
            f"phase {phase.id} has {scored} submission(s) scored or being scored under its current scoring; "
            f"changing {', '.join(reasons) or 'the scoring'} would rank results produced differently side by "
            "side. Send the same change with ?reevaluate=true to re-evaluate every submission under the new "
            "scoring (a new evaluation version; current results stay stored, off the board), or leave it unchanged."
        )
    phase.scoring_fingerprint = new_fingerprint
    return scored > 0


# MIDOG 2025 Track 1 scores every case by these ground-truth labels (groups of the registered test set).
LABELS_2025 = ("tumor domain", "roi type")


def _check_2025_labels(test_set: TestSet, rules: str) -> None:
    """A midog2025 phase needs a detection set whose every case has a tumour domain and a roi type."""
    if rules != "midog2025" or test_set.task != "detection":
        return
    for name, case in (test_set.cases or {}).items():
        groups = case.get("groups") or {}
        missing = [label for label in LABELS_2025 if label not in groups]
        if missing:
            raise InvalidInput(
                f"test_set_id: case {name!r} of test set {test_set.id} ({test_set.name}) has no {missing[0]!r}: "
                "scoring_options.rules midog2025 needs the official 2025 ground truth (import it with "
                "`midog-eval dataset import`), or choose midog2022"
            )


def _check_phase(session: Session, phase: Phase) -> None:
    if phase.opens_at is not None and phase.closes_at is not None and phase.closes_at <= phase.opens_at:
        raise InvalidInput("closes_at must be after opens_at")
    options = canonical_options(phase.scoring_options)
    task = options["task"]
    if phase.test_set_id is not None:
        test_set = session.get(TestSet, phase.test_set_id)
        if test_set is None:
            raise InvalidInput(f"test_set_id: no test set {phase.test_set_id}")
        if test_set.task != task:
            raise InvalidInput(
                f"test_set_id: test set {test_set.id} ({test_set.name}) is a {test_set.task} set, but this phase "
                f"scores {task} (scoring_options.task)"
            )
        _check_2025_labels(test_set, options["rules"])
        _check_seen_groups(test_set, phase.seen_groups, options["group_key"])
    if phase.team_share is not None and phase.gpu_budget_hours is None:
        raise InvalidInput("team_share: a share of the GPU budget needs gpu_budget_hours")
    allowed = RANKING_METRICS[task]
    if phase.ranking_metric not in allowed:
        raise InvalidInput(
            f"ranking_metric: {task} phases rank by {', '.join(m.value for m in allowed)}, not {phase.ranking_metric}"
        )
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


def _check_seen_groups(test_set: TestSet, seen: list[str] | None, group_key: str) -> None:
    """Every seen group must be a group of the test set, and at least one group must stay unseen."""
    if not seen:
        return
    labels = {str((case.get("groups") or {}).get(group_key)) for case in (test_set.cases or {}).values()}
    unknown = sorted(set(seen) - labels)
    if unknown:
        raise InvalidInput(
            f"seen_groups: {', '.join(map(repr, unknown))} not among the {group_key!r} groups of test set "
            f"{test_set.id} ({', '.join(sorted(labels))})"
        )
    if labels <= set(seen):
        raise InvalidInput("seen_groups: every group is seen; leave at least one unseen, or clear seen_groups")


def _flush_or_conflict(session: Session, message: str) -> None:
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        raise Conflict(message) from None
