"""Organiser operations: test sets, teams, tokens, submission moderation, requeue/cancel, re-evaluation,
results export. Never commits; enqueues after commit. Must not import FastAPI.
"""

from __future__ import annotations

import re
import secrets
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from app import lifecycle
from app.admin.content import record_content
from app.admin.schemas import EvaluationAdminRead, PhaseProgressRead, SubmissionAdminRead, TestSetCreate
from app.challenges import service as challenges
from app.challenges.schemas import PhaseUpdate
from app.challenges.service import scoring_fingerprint_of
from app.errors import Conflict, InvalidInput, NotFound
from app.leaderboard.service import PROVENANCE_HEADER, provenance_columns, to_csv
from app.security_headers import report_policy
from app.submissions.service import current_evaluation, participant_view
from app.tables import (
    Evaluation,
    Phase,
    Result,
    Submission,
    Team,
    TestSet,
)
from app.worker_hosts import service as workers
from worker.result_fields import fields_of
from worker.safe_delete import discard_tree

if TYPE_CHECKING:
    from worker.datasets.content import TestSetContent

TEST_SETS_DIR = "test-sets"  # uploaded test sets, under the storage directory
# The metrics of the organisers' result view and results CSV: the fields every result has (worker.result_fields).
DETECTION_METRICS = tuple(f.name for f in fields_of("detection"))


def register_test_set(session: Session, *, data: TestSetCreate) -> TestSet:
    """Validate a test set on the server (manifest, images present, ground truth covering the same cases)."""
    _check_name_free(session, data.name)
    root = Path(data.path)
    try:
        is_dir = root.is_dir()
    except (OSError, ValueError):  # e.g. a name too long for the file system
        is_dir = False
    if not is_dir:
        raise InvalidInput(f"path: {data.path} is not a directory on the server")
    cases, content = _validated_cases(root)
    return _add_test_set(session, name=data.name, description=data.description, root=root, cases=cases, content=content)


def register_uploaded_test_set(
    session: Session, *, name: str, description: str, archive: Path, storage_dir: Path, max_archive_bytes: int
) -> TestSet:
    """Unpack an uploaded archive (zip or tar, pre-scanned before anything is written) into a fresh directory
    under <storage>/test-sets, validate it exactly like a server directory, and move it into place.

    On any failure nothing is left behind; the caller removes the directory of the returned row's manifest
    if the transaction then fails to commit.
    """
    from worker.archives.manifest import ArchiveError
    from worker.datasets.manifest import share_images
    from worker.datasets.unpack import UnpackLimits, unpack_archive

    _check_name_free(session, name)
    sets_dir = storage_dir / TEST_SETS_DIR
    sets_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=sets_dir, prefix=".incoming-"))
    final: Path | None = None
    try:
        limits = UnpackLimits(max_archive_bytes=max_archive_bytes, max_total_bytes=4 * max_archive_bytes)
        try:
            root = unpack_archive(archive, work / "set", limits=limits)
        except ArchiveError as exc:
            raise InvalidInput(str(exc)) from None
        try:
            cases, content = _validated_cases(root)
        except InvalidInput as exc:  # paths inside the temp directory mean nothing to the organiser
            raise InvalidInput(exc.message.replace(f"{root}/", "archive: ").replace(str(root), "archive")) from None
        slug = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in name)[:60].strip(".-") or "set"
        final = sets_dir / f"{slug}-{secrets.token_hex(4)}"
        share_images(root)  # extracted under the server's private umask; the sandbox must read the images
        root.rename(final)  # same file system: atomic
        return _add_test_set(session, name=name, description=description, root=final, cases=cases, content=content)
    except BaseException:
        if final is not None:
            discard_tree(final)
        raise
    finally:
        discard_tree(work)


def _check_name_free(session: Session, name: str) -> None:
    if session.scalar(select(TestSet.id).where(TestSet.name == name)) is not None:
        raise Conflict(f"test set {name!r} exists")


def _validated_cases(root: Path) -> tuple[dict[str, dict[str, Any]], TestSetContent]:
    """The checks every registration runs: manifest, each image present inside the set and matching its
    sha256 (when the manifest gives one), ground truth covering exactly the manifest's cases; for a
    classification set also one label per patch and the image's page count. Returns the cases and the set's
    content (every input and ground-truth file hashed once)."""
    from worker.datasets.content import content_of
    from worker.datasets.errors import DatasetError
    from worker.datasets.manifest import CLASSIFICATION
    from worker.datasets.manifest import TestSet as DiskTestSet

    try:
        disk = DiskTestSet.open(root)
        for case in disk.cases:
            if case.image is not None:
                image = disk.image_path(case).resolve()
                if not image.is_relative_to(root.resolve()) or not image.is_file():
                    raise InvalidInput(f"case {case.name!r}: image {case.image!r} is missing")
        content = content_of(root)
        for case in disk.cases:
            if case.image is not None and case.sha256 is not None:
                relative = disk.image_path(case).resolve().relative_to(root.resolve()).as_posix()
                if content.sha256_of(relative) != case.sha256.lower():
                    raise InvalidInput(f"case {case.name!r}: image {case.image!r} does not match its sha256")
        names = {c.name for c in disk.cases}
        covered = _classification_truth(disk) if disk.task == CLASSIFICATION else set(disk.ground_truth())
    except DatasetError as exc:
        raise InvalidInput(str(exc)) from None
    except OSError as exc:
        raise InvalidInput(f"path: cannot read the test set ({exc.strerror or exc})") from None
    if covered != names:
        extra = sorted(covered - names)[:5]
        missing = sorted(names - covered)[:5]
        raise InvalidInput(f"ground truth and manifest disagree (only in ground truth: {extra}; missing: {missing})")
    if not names:
        raise InvalidInput("the manifest has no cases")
    cases: dict[str, dict[str, Any]] = {}
    for c in disk.cases:
        cases[c.name] = {"width": c.width, "height": c.height, "spacing_mm": c.spacing_mm, "groups": c.groups}
        if c.patches is not None:
            cases[c.name]["patches"] = c.patches
    return cases, content


def _classification_truth(disk: Any) -> set[str]:
    """The stacks of a classification set's ground truth, each checked against its manifest entry: one label
    per patch, and as many pages in the image."""
    from worker.datasets.tiff import page_count
    from worker.evaluation.classification import read_ground_truth
    from worker.evaluation.errors import FormatError

    try:
        truth = read_ground_truth(disk.ground_truth_path)
    except FormatError as exc:
        raise InvalidInput(f"ground truth: {exc}") from None
    for case in disk.cases:
        stack = truth.get(case.name)
        if stack is not None and len(stack.labels) != case.patches:
            raise InvalidInput(f"stack {case.name!r}: {len(stack.labels)} labels for {case.patches} patches")
        if case.image is not None and page_count(disk.image_path(case)) != case.patches:
            raise InvalidInput(f"stack {case.name!r}: the image does not have {case.patches} pages")
    return set(truth)


def _add_test_set(
    session: Session,
    *,
    name: str,
    description: str,
    root: Path,
    cases: dict[str, dict[str, Any]],
    content: TestSetContent,
) -> TestSet:
    from worker.datasets.manifest import TestSet as DiskTestSet
    from worker.datasets.manifest import scoring_digest, sha256_file

    manifest_path = root / "manifest.json"
    test_set = TestSet(
        name=name,
        description=description,
        manifest_path=str(manifest_path.resolve()),
        manifest_sha256=sha256_file(manifest_path),
        scoring_digest=scoring_digest(root),
        task=DiskTestSet.open(root).task,
        case_count=len(cases),
        cases=cases,
    )
    session.add(test_set)
    session.flush()
    record_content(session, test_set, content)
    return test_set


def get_team(session: Session, *, team_id: int) -> Team:
    team = session.get(Team, team_id)
    if team is None:
        raise NotFound(f"no team {team_id}")
    return team


def get_submission(session: Session, *, submission_id: int) -> Submission:
    submission = session.scalars(
        select(Submission)
        .options(
            selectinload(Submission.evaluations).selectinload(Evaluation.result),
            selectinload(Submission.phase),
            selectinload(Submission.team),
        )
        .where(Submission.id == submission_id)
    ).one_or_none()
    if submission is None:
        raise NotFound(f"no submission {submission_id}")
    return submission


def list_submissions(
    session: Session, *, phase_id: int | None, team_id: int | None, limit: int, offset: int
) -> Sequence[Submission]:
    stmt = (
        select(Submission)
        .options(
            selectinload(Submission.evaluations).selectinload(Evaluation.result),
            selectinload(Submission.phase),
            selectinload(Submission.team),
        )
        .order_by(Submission.id.desc())
        .limit(limit)
        .offset(offset)
    )
    if phase_id is not None:
        stmt = stmt.where(Submission.phase_id == phase_id)
    if team_id is not None:
        stmt = stmt.where(Submission.team_id == team_id)
    return session.scalars(stmt).all()


def _result_dict(result: Result | None) -> dict[str, Any] | None:
    if result is None:
        return None
    keys = (
        *DETECTION_METRICS,
        "groups",
        "cases",
        "rank_robustness",
        "intervals",
        "evaluation_version",
        "scoring_fingerprint",
        "provenance",
    )
    return {k: getattr(result, k) for k in keys}


def admin_view(submission: Submission) -> SubmissionAdminRead:
    base = participant_view(submission).model_dump()
    # organisers see scores whatever the phase's policy
    ev = current_evaluation(submission)
    if ev is not None and ev.result is not None:
        from app.submissions.service import result_read

        base["result"] = result_read(ev.result, phase=submission.phase, organiser=True).model_dump()
        base["scores_hidden"] = False
    return SubmissionAdminRead(
        **base,
        team_name=submission.team.name,
        file_path=submission.file_path,
        model_path=submission.model_path,
        evaluations=[
            EvaluationAdminRead(
                id=e.id,
                version=e.version,
                status=e.status,
                attempt=e.attempt,
                lease_owner=e.lease_owner,
                lease_expires_at=e.lease_expires_at,
                queued_at=e.queued_at,
                started_at=e.started_at,
                finished_at=e.finished_at,
                progress=e.progress,
                progress_message=e.progress_message,
                error_message=e.error_message,
                error_detail=e.error_detail,
                infrastructure_failure=e.infrastructure_failure,
                gpu_seconds=e.gpu_seconds,
                result=_result_dict(e.result),
            )
            for e in submission.evaluations
        ],
    )


def moderate_submission(
    session: Session,
    *,
    submission: Submission,
    is_hidden: bool | None,
    is_disqualified: bool | None,
    is_baseline: bool | None,
) -> Submission:
    """Hide, disqualify or mark as baseline (app.lifecycle.moderate: the board is rebuilt after commit)."""
    return lifecycle.moderate(
        session, submission=submission, is_hidden=is_hidden, is_disqualified=is_disqualified, is_baseline=is_baseline
    )


def requeue_submission(session: Session, *, submission: Submission, discard_result: bool = False) -> Evaluation:
    """Put the submission's evaluation of the phase's current version back to `queued` (app.lifecycle)."""
    return lifecycle.requeue(session, submission=submission, discard_result=discard_result)


def cancel_submission(session: Session, *, submission: Submission) -> Evaluation:
    return lifecycle.cancel(
        session, evaluation=current_evaluation(submission), reason=lifecycle.CancelReason.ORGANISERS
    )


def reevaluate_phase(session: Session, *, phase: Phase) -> int:
    """A new evaluation version for every submission of the phase under its scoring as of now (this
    server's scorer, the phase's options and test set); old results are kept, off the board."""
    return len(lifecycle.reevaluate(session, phase=phase, fingerprint=scoring_fingerprint_of(session, phase)))


def update_phase(
    session: Session, *, phase_id: int, data: PhaseUpdate, reevaluate: bool, stale_after_s: float
) -> Phase:
    """Change a phase (app.challenges.service.update_phase): kinds it newly allows need a live worker that can
    run them (422); a scoring change of a scored phase is refused (409) unless `reevaluate`, which then
    re-evaluates every submission under the new scoring."""
    phase = challenges.get_phase(session, phase_id=phase_id, include_unpublished=True)
    if data.allowed_kinds is not None:
        added = [k.value for k in data.allowed_kinds if k.value not in phase.allowed_kinds]
        workers.require_capable_workers(session, kinds=added, stale_after_s=stale_after_s)
    if challenges.update_phase(session, phase=phase, data=data, reevaluate=reevaluate):
        reevaluate_phase(session, phase=phase)
    return phase


def update_team(session: Session, *, team: Team, is_approved: bool | None, is_disqualified: bool | None) -> Team:
    """Approve a team, or disqualify it (app.lifecycle.disqualify_team: its boards are rebuilt after commit)."""
    if is_approved is not None:
        team.is_approved = is_approved
    if is_disqualified is not None:
        lifecycle.disqualify_team(session, team=team, disqualified=is_disqualified)
    session.flush()
    return team


def phase_progress(session: Session, *, phase: Phase) -> PhaseProgressRead:
    """Counts of the phase's current evaluation version (what a re-evaluation has done so far)."""
    version = phase.evaluation_version
    in_phase = Submission.phase_id == phase.id
    by_status = {
        str(status.value if hasattr(status, "value") else status): int(count)
        for status, count in session.execute(
            select(Evaluation.status, func.count())
            .join(Submission, Submission.id == Evaluation.submission_id)
            .where(in_phase, Evaluation.version == version)
            .group_by(Evaluation.status)
        )
    }
    submissions = int(
        session.scalar(
            select(func.count()).select_from(Submission).where(in_phase, Submission.is_disqualified.is_(False))
        )
        or 0
    )
    ranked = int(
        session.scalar(
            select(func.count())
            .select_from(Result)
            .join(Submission, Submission.id == Result.submission_id)
            .where(
                in_phase,
                Result.evaluation_version == version,
                Result.scoring_fingerprint == phase.scoring_fingerprint,
            )
        )
        or 0
    )
    started = session.scalar(
        select(func.count(func.distinct(Evaluation.submission_id)))
        .join(Submission, Submission.id == Evaluation.submission_id)
        .where(in_phase, Submission.is_disqualified.is_(False), Evaluation.version == version)
    )
    return PhaseProgressRead(
        phase_id=phase.id,
        evaluation_version=version,
        scoring_fingerprint=phase.scoring_fingerprint,
        scoring_current=scoring_fingerprint_of(session, phase) == phase.scoring_fingerprint,
        submissions=submissions,
        by_status=by_status,
        ranked=ranked,
        not_started=max(submissions - int(started or 0), 0),
    )


def results_csv(session: Session, *, phase_id: int) -> str:
    """Every result of the phase (all evaluation versions), formula-injection safe."""
    rows = session.execute(
        select(
            Submission.id,
            Team.name,
            Submission.method_name,
            Submission.description,
            Submission.paper_url,
            Submission.kind,
            Submission.is_baseline,
            Submission.is_hidden,
            Submission.is_disqualified,
            Submission.created_at,
            Result.evaluation_version,
            *(getattr(Result, name) for name in DETECTION_METRICS),
            Result.rank_robustness,
            Result.scoring_fingerprint,
            Result.provenance,
        )
        .join(Team, Team.id == Submission.team_id)
        .join(Result, Result.submission_id == Submission.id)
        .where(Submission.phase_id == phase_id)
        .order_by(Submission.id, Result.evaluation_version)
    ).all()
    header = [
        "submission_id",
        "team",
        "method",
        "description",
        "paper_url",
        "kind",
        "baseline",
        "hidden",
        "disqualified",
        "submitted_at",
        "evaluation_version",
        *DETECTION_METRICS,
        "rank_robustness",
        "scoring_fingerprint",
        *PROVENANCE_HEADER,
    ]
    return to_csv(
        header,
        [
            [v.value if hasattr(v, "value") else v for v in row[:-1]] + provenance_columns(row.provenance)
            for row in rows
        ],
    )


DOMAIN_REPORT_DIR = "domain-report"  # beside the test set's manifest.json


@dataclass(frozen=True)
class DomainReportPage:
    html: str
    policy: str  # Content-Security-Policy: the page's own inline stylesheets only


def domain_report_page(session: Session, *, test_set_id: int) -> DomainReportPage:
    """The page `midog-eval dataset report` wrote beside the test set, with a CSP for its inline styles."""
    test_set = session.get(TestSet, test_set_id)
    if test_set is None:
        raise NotFound(f"no test set {test_set_id}")
    directory = Path(test_set.manifest_path).parent
    page = directory / DOMAIN_REPORT_DIR / "index.html"
    if not page.is_file():
        raise NotFound(
            f"test set {test_set_id} has no domain report yet: run `midog-eval dataset report {directory} "
            f"--out {directory / DOMAIN_REPORT_DIR}` on the server"
        )
    html = page.read_text(encoding="utf-8")
    return DomainReportPage(html, report_policy(*re.findall(r"<style>(.*?)</style>", html, flags=re.S)))
