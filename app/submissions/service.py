"""Submitting (checks, quota, storage, evaluation row, enqueue after commit) and reading submissions with the
phase's visibility policy applied (U7). Never commits. Must not import FastAPI.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import and_, exists, func, select
from sqlalchemy.orm import Session, selectinload

from app import lifecycle
from app.auth.service import Principal
from app.challenges.service import own_scores_hidden, phase_is_open
from app.errors import Conflict, Forbidden, InvalidInput, NotFound, PhaseClosed, QuotaExceeded
from app.scoring import canonical_options, public_provenance
from app.storage import move_into_storage
from app.submissions.budget import check_budget
from app.submissions.schemas import (
    EvaluationRead,
    QuotaRead,
    ResultRead,
    StatusEvent,
    SubmissionRead,
)
from app.submissions.upload import ReceivedUpload
from app.tables import (
    ACTIVE_STATUSES,
    Evaluation,
    EvaluationStatus,
    Phase,
    Result,
    RunMode,
    Submission,
    SubmissionKind,
    Team,
    utcnow,
)
from worker.result_fields import METRIC_NAMES

# predictions keep the suffix the validator gave them (.json or .csv): the scoring core reads by suffix
EXTENSIONS = {SubmissionKind.MODEL: ".archive", SubmissionKind.CONTAINER: ".tar"}
MODEL_TARBALL_EXTENSION = ".model.tar.gz"


def next_utc_midnight(now: datetime) -> datetime:
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return day + timedelta(days=1)


def _counted_submissions(session: Session, *, phase: Phase, team_id: int, since: datetime | None) -> int:
    """Submissions that use up quota: all but those whose every evaluation failed uncounted (an infrastructure
    failure always; any failure when the phase does not count failed submissions)."""
    stmt = select(func.count(Submission.id)).where(Submission.phase_id == phase.id, Submission.team_id == team_id)
    if since is not None:
        stmt = stmt.where(Submission.created_at >= since)
    uncounted = Evaluation.status == EvaluationStatus.FAILED
    if phase.failed_count_towards_quota:
        uncounted = and_(uncounted, Evaluation.infrastructure_failure.is_(True))
    has_uncounted = exists().where(Evaluation.submission_id == Submission.id, uncounted)
    has_counted = exists().where(Evaluation.submission_id == Submission.id, ~uncounted)
    return int(session.scalar(stmt.where(~and_(has_uncounted, ~has_counted))) or 0)


def _active_evaluations(session: Session, *, phase: Phase, team_id: int) -> int:
    stmt = (
        select(func.count(Evaluation.id))
        .join(Submission, Submission.id == Evaluation.submission_id)
        .where(
            Submission.phase_id == phase.id,
            Submission.team_id == team_id,
            Evaluation.status.in_(ACTIVE_STATUSES),
        )
    )
    return int(session.scalar(stmt) or 0)


def quota_status(session: Session, *, phase: Phase, team: Team, now: datetime | None = None) -> QuotaRead:
    now = now or utcnow()
    day_start = next_utc_midnight(now) - timedelta(days=1)
    daily_used = _counted_submissions(session, phase=phase, team_id=team.id, since=day_start)
    phase_used = _counted_submissions(session, phase=phase, team_id=team.id, since=None)
    return QuotaRead(
        phase_id=phase.id,
        daily_limit=phase.daily_quota,
        daily_used=daily_used,
        daily_remaining=None if phase.daily_quota is None else max(0, phase.daily_quota - daily_used),
        daily_resets_at=next_utc_midnight(now),
        phase_limit=phase.phase_quota,
        phase_used=phase_used,
        phase_remaining=None if phase.phase_quota is None else max(0, phase.phase_quota - phase_used),
        active_evaluations=_active_evaluations(session, phase=phase, team_id=team.id),
        max_active=phase.max_active_per_team,
        failed_count_towards_quota=phase.failed_count_towards_quota,
    )


def check_can_submit(
    session: Session, *, phase: Phase, team: Team, kind: SubmissionKind, now: datetime | None = None
) -> None:
    """Every rule a new submission must pass, cheapest first; raises 403/409/422/429."""
    now = now or utcnow()
    if not phase.challenge.is_published:
        raise NotFound(f"no phase {phase.id}")
    if not phase_is_open(phase, now):
        raise PhaseClosed("this phase is not open for submissions")
    if team.is_disqualified:
        raise Forbidden("this team is disqualified")
    if phase.challenge.requires_approval and not team.is_approved:
        raise Forbidden("this challenge requires organiser approval of the team")
    if kind.value not in phase.allowed_kinds:
        raise InvalidInput(f"kind: {kind.value!r} submissions are not accepted in this phase")
    if phase.test_set_id is None:
        raise Conflict("this phase has no test set yet")
    if phase.parent_phase_id is not None:
        passed = session.scalar(
            select(func.count(Result.id))
            .join(Submission, Submission.id == Result.submission_id)
            .where(Submission.phase_id == phase.parent_phase_id, Submission.team_id == team.id)
        )
        if not passed:
            raise Forbidden("gated: this phase needs a successful submission in its parent phase first")
    quota = quota_status(session, phase=phase, team=team, now=now)
    if quota.phase_remaining is not None and quota.phase_remaining <= 0:
        reset = phase.closes_at or (now + timedelta(days=365))
        raise QuotaExceeded(
            f"phase quota of {quota.phase_limit} submissions used", reset_at=reset, retry_after_s=_seconds(reset, now)
        )
    if quota.daily_remaining is not None and quota.daily_remaining <= 0:
        reset = quota.daily_resets_at
        raise QuotaExceeded(
            f"daily quota of {quota.daily_limit} submissions used; resets at {reset.isoformat()}",
            reset_at=reset,
            retry_after_s=_seconds(reset, now),
        )
    if quota.active_evaluations >= phase.max_active_per_team:
        raise Conflict("this team already has an evaluation queued or running in this phase")
    check_budget(session, phase=phase, team_id=team.id, kind=kind)


def _seconds(reset: datetime, now: datetime) -> int:
    return int((reset - now).total_seconds()) + 1


def lock_team(session: Session, *, team_id: int) -> Team:
    """Serialise concurrent submissions of one team (row lock on PostgreSQL; SQLite has one writer)."""
    team = session.scalars(
        select(Team).where(Team.id == team_id).with_for_update().execution_options(populate_existing=True)
    ).one()
    return team


@dataclass(frozen=True)
class SubmissionFields:
    method_name: str = ""
    description: str = ""
    paper_url: str = ""


@dataclass(frozen=True)
class ContainerParts:
    """What a container submission may bring besides its image: a model tarball (checked), the earlier
    submission whose image it reuses instead of uploading one, and the run mode it asks for."""

    model: ReceivedUpload | None = None
    image_from: Submission | None = None
    run_mode: RunMode | None = None


def reusable_image(session: Session, *, team_id: int, submission_id: int, storage_dir: Path) -> Submission:
    """The earlier container submission of this team whose stored image a new submission may run with; every
    refusal is one line naming the field (another team's submission reads as not found)."""
    earlier = session.get(Submission, submission_id)
    if earlier is None or earlier.team_id != team_id:
        raise InvalidInput(f"image_submission: your team has no submission {submission_id}")
    if earlier.kind is not SubmissionKind.CONTAINER:
        raise InvalidInput(
            f"image_submission: submission {submission_id} is a {earlier.kind.value} submission; only a container "
            "submission's image can be reused"
        )
    if not (storage_dir / earlier.file_path).is_file():
        raise InvalidInput(
            f"image_submission: the image of submission {submission_id} is no longer stored; upload the image again"
        )
    return earlier


def create_submission(
    session: Session,
    *,
    phase: Phase,
    principal: Principal,
    kind: SubmissionKind,
    upload: ReceivedUpload | None,
    fields: SubmissionFields,
    storage_dir: Path,
    container: ContainerParts | None = None,
) -> Submission:
    """Store the file(s), commit-to-be a `queued` submission and evaluation, enqueue the run after commit.

    `upload` is None only for a container submission that reuses an earlier image (`container.image_from`)."""
    assert principal.team is not None
    assert principal.participant is not None
    parts = container or ContainerParts()
    team = lock_team(session, team_id=principal.team.id)
    check_can_submit(session, phase=phase, team=team, kind=kind)
    folder = Path("submissions") / str(phase.id)
    if upload is not None:
        relative = folder / f"{uuid.uuid4().hex}{EXTENSIONS.get(kind, upload.path.suffix)}"
        # atomic (the temp dir is under storage_dir); removed again should this transaction roll back
        move_into_storage(session, upload.path, storage_dir / relative)
        image = (relative.as_posix(), upload.filename, upload.sha256, upload.size)
    elif parts.image_from is not None:
        # the same stored file as the earlier submission's: its row (and file) outlive neither
        earlier = reusable_image(session, team_id=team.id, submission_id=parts.image_from.id, storage_dir=storage_dir)
        image = (earlier.file_path, earlier.original_filename, earlier.sha256, earlier.size_bytes)
    else:
        raise InvalidInput("file: the `file` part is missing")
    submission = Submission(
        phase_id=phase.id,
        team_id=team.id,
        participant_id=principal.participant.id,
        kind=kind,
        file_path=image[0],
        original_filename=image[1],
        sha256=image[2],
        size_bytes=image[3],
        method_name=fields.method_name,
        description=fields.description,
        paper_url=fields.paper_url,
        image_submission_id=parts.image_from.id if parts.image_from is not None and upload is None else None,
        run_mode=parts.run_mode,
    )
    if parts.model is not None:
        model_relative = folder / f"{uuid.uuid4().hex}{MODEL_TARBALL_EXTENSION}"
        move_into_storage(session, parts.model.path, storage_dir / model_relative)
        submission.model_path = model_relative.as_posix()
        submission.model_filename = parts.model.filename
        submission.model_sha256 = parts.model.sha256
        submission.model_size_bytes = parts.model.size
    session.add(submission)
    session.flush()
    lifecycle.create(session, submission=submission, version=phase.evaluation_version)
    return submission


def effective_run_mode(submission: Submission) -> RunMode | None:
    """How a container submission runs: the mode it asked for, else its phase's; None for other kinds."""
    if submission.kind is not SubmissionKind.CONTAINER:
        return None
    return submission.run_mode or submission.phase.run_mode


def cancel_queued(session: Session, *, submission: Submission) -> Evaluation:
    """The team withdraws a submission whose evaluation has not started (a started run is left to finish:
    the organisers can still cancel it); it keeps counting towards the quota."""
    return lifecycle.cancel(session, evaluation=current_evaluation(submission), reason=lifecycle.CancelReason.TEAM)


def current_evaluation(submission: Submission) -> Evaluation | None:
    """The evaluation of the phase's current version, else the newest one."""
    if not submission.evaluations:
        return None
    for ev in submission.evaluations:
        if ev.version == submission.phase.evaluation_version:
            return ev
    return max(submission.evaluations, key=lambda e: (e.version, e.id))


def _load_options() -> list[object]:
    return [
        selectinload(Submission.evaluations).selectinload(Evaluation.result),
        selectinload(Submission.phase),
    ]


def get_team_submission(session: Session, *, submission_id: int, team_id: int) -> Submission:
    submission = session.scalars(
        select(Submission).options(*_load_options()).where(Submission.id == submission_id)  # type: ignore[arg-type]
    ).one_or_none()
    if submission is None or submission.team_id != team_id:
        raise NotFound(f"no submission {submission_id} of your team")
    return submission


def list_team_submissions(
    session: Session, *, team_id: int, phase_id: int | None, limit: int, offset: int
) -> Sequence[Submission]:
    stmt = (
        select(Submission)
        .options(*_load_options())  # type: ignore[arg-type]
        .where(Submission.team_id == team_id)
        .order_by(Submission.id.desc())
        .limit(limit)
        .offset(offset)
    )
    if phase_id is not None:
        stmt = stmt.where(Submission.phase_id == phase_id)
    return session.scalars(stmt).all()


def filter_groups(groups: dict[str, Any], shown: list[str] | None) -> dict[str, dict[str, Any]]:
    return {
        label: dict(values)
        for label, values in groups.items()
        if isinstance(values, dict) and (shown is None or label in shown)
    }


def result_read(result: Result, *, phase: Phase, organiser: bool = False) -> ResultRead:
    """A result as its team (the phase's shown groups, public provenance) or organisers (all) see it."""
    shown_groups = None if organiser else phase.shown_groups
    return ResultRead(
        task=str(canonical_options(phase.scoring_options)["task"]),
        **{name: getattr(result, name) for name in METRIC_NAMES},
        evaluation_version=result.evaluation_version,
        groups=filter_groups(result.groups or {}, shown_groups),
        rank_robustness=result.rank_robustness,
        intervals=dict(result.intervals or {}),
        scoring_fingerprint=result.scoring_fingerprint,
        ranked=result.scoring_fingerprint == phase.scoring_fingerprint
        and result.evaluation_version == phase.evaluation_version,
        provenance=dict(result.provenance or {}) if organiser else public_provenance(result.provenance),
    )


def team_submission_view(session: Session, *, submission_id: int, team_id: int) -> SubmissionRead:
    """One submission of the team as its members see it (404 for another team's)."""
    return participant_view(get_team_submission(session, submission_id=submission_id, team_id=team_id))


def cancel_team_submission(session: Session, *, submission_id: int, team_id: int) -> SubmissionRead:
    """The team withdraws one of its submissions while its evaluation is still queued (409 otherwise)."""
    submission = get_team_submission(session, submission_id=submission_id, team_id=team_id)
    cancel_queued(session, submission=submission)
    session.refresh(submission, ["evaluations"])
    return participant_view(submission)


def participant_view(submission: Submission, *, now: datetime | None = None) -> SubmissionRead:
    """What the submitting team may see: never per-case counts or organiser error details; while the phase
    hides scores (hidden until close), no scores, no timings and no progress messages either (U7)."""
    phase = submission.phase
    hidden = own_scores_hidden(phase, now)
    ev = current_evaluation(submission)
    evaluation = None
    result = None
    if ev is not None:
        evaluation = EvaluationRead(
            id=ev.id,
            version=ev.version,
            status=ev.status,
            attempt=ev.attempt,
            progress=ev.progress,
            progress_message="" if hidden else ev.progress_message,
            error_message=ev.error_message,
            queued_at=ev.queued_at,
            started_at=None if hidden else ev.started_at,
            finished_at=None if hidden else ev.finished_at,
            gpu_seconds=None if hidden else round(ev.gpu_seconds, 1),
        )
        # a result stays valid while its submission is re-run (requeue), until the new one replaces it
        if not hidden and ev.result is not None:
            result = result_read(ev.result, phase=phase)
    return SubmissionRead(
        id=submission.id,
        phase_id=submission.phase_id,
        team_id=submission.team_id,
        kind=submission.kind,
        original_filename=submission.original_filename,
        sha256=submission.sha256,
        size_bytes=submission.size_bytes,
        method_name=submission.method_name,
        description=submission.description,
        paper_url=submission.paper_url,
        is_baseline=submission.is_baseline,
        is_hidden=submission.is_hidden,
        is_disqualified=submission.is_disqualified,
        created_at=submission.created_at,
        scores_hidden=hidden,
        model_filename=submission.model_filename or "",
        model_sha256=submission.model_sha256,
        model_size_bytes=submission.model_size_bytes,
        image_submission_id=submission.image_submission_id,
        run_mode=effective_run_mode(submission),
        logs_shown=bool(phase.show_logs) and submission.kind is not SubmissionKind.PREDICTIONS,
        evaluation=evaluation,
        result=result,
    )


def status_event(session: Session, *, submission_id: int) -> StatusEvent:
    """A small snapshot for the server-sent events stream (read-only)."""
    submission = session.scalars(
        select(Submission).options(*_load_options()).where(Submission.id == submission_id)  # type: ignore[arg-type]
    ).one()
    hidden = own_scores_hidden(submission.phase)
    ev = current_evaluation(submission)
    return StatusEvent(
        submission_id=submission.id,
        evaluation_id=ev.id if ev else None,
        status=ev.status if ev else None,
        progress=ev.progress if ev else 0.0,
        progress_message="" if hidden or ev is None else ev.progress_message,
        error_message=ev.error_message if ev else "",
    )
