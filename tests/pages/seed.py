"""Seed data of the page tests: a published challenge with a public phase (three teams and a baseline,
four scanners) and a hidden-until-close phase whose scores must never be rendered."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.orm import Session

from app.challenges.service import scoring_fingerprint_of
from app.leaderboard.standings import refresh_standings
from app.tables import (
    Challenge,
    Evaluation,
    EvaluationStatus,
    LeaderboardVisibility,
    Participant,
    Phase,
    Result,
    Submission,
    SubmissionKind,
    Team,
    TestSet,
    utcnow,
)

SCANNERS = ("Scanner A", "Scanner B", "Scanner C", "Scanner D")
# team -> (method, per-scanner F1, is_baseline); overall counts are derived from per-scanner counts below
ENTRIES = {
    "Aurora": ("stain-augmented RetinaNet", (0.81, 0.77, 0.52, 0.74), False),
    "Borealis": ("heatmap U-Net", (0.70, 0.72, 0.69, 0.71), False),
    "Cirrus": ("", (0.55, 0.43, 0.20, 0.61), False),
    "Organisers": ("classical DoG detector", (0.40, 0.35, 0.31, 0.38), True),
}
HIDDEN_F1 = 0.987654
SEEN = ("Scanner A", "Scanner B")  # the public phase's training scanners
CASE_SHARES = (0.5, 0.3, 0.2)  # each scanner's counts split over three cases of unequal size


def case_names(scanner_index: int) -> list[str]:
    return [f"{scanner_index + 1}{k + 1:02d}.tiff" for k in range(len(CASE_SHARES))]


def _split(count: int) -> list[int]:
    """`count` over the cases by CASE_SHARES, the rounding remainder to the last case."""
    parts = [round(count * share) for share in CASE_SHARES[:-1]]
    return [*parts, count - sum(parts)]


@dataclass
class Seeded:
    challenge_slug: str
    public_phase_id: int
    hidden_phase_id: int
    submission_ids: dict[str, int]
    hidden_submission_id: int


def _counts(f1: float, truth: int = 40) -> tuple[int, int, int]:
    """TP, FP, FN with about this F1 (FP = FN)."""
    tp = round(f1 * truth)
    return tp, truth - tp, truth - tp


def _result(evaluation: Evaluation, submission: Submission, f1s: tuple[float, ...], version: int) -> Result:
    groups = {}
    total = [0, 0, 0]
    cases: dict[str, dict[str, int]] = {}
    for index, (label, f1) in enumerate(zip(SCANNERS, f1s, strict=True)):
        tp, fp, fn = _counts(f1)
        for name, c_tp, c_fp, c_fn in zip(case_names(index), _split(tp), _split(fp), _split(fn), strict=True):
            cases[name] = {"tp": c_tp, "fp": c_fp, "fn": c_fn}
        total = [total[0] + tp, total[1] + fp, total[2] + fn]
        groups[label] = {
            "tp": tp,
            "fp": fp,
            "fn": fn,
            "precision": tp / (tp + fp),
            "recall": tp / (tp + fn),
            "f1": f1,
            "ap": f1 - 0.05,
            "f1_ci_low": f1 - 0.1,
            "f1_ci_high": f1 + 0.08,
        }
    tp, fp, fn = total
    f1 = 2 * tp / (2 * tp + fp + fn)
    return Result(
        evaluation=evaluation,
        submission_id=submission.id,
        evaluation_version=version,
        tp=tp,
        fp=fp,
        fn=fn,
        precision=tp / (tp + fp),
        recall=tp / (tp + fn),
        f1=f1,
        ap=f1 - 0.04,
        f1_ci_low=f1 - 0.06,
        f1_ci_high=f1 + 0.05,
        groups=groups,
        cases=cases,
        rank_robustness=0.5 + 0.1 * len(submission.method_name) / 10,
        scoring_fingerprint=submission.phase.scoring_fingerprint,
        provenance={
            "recorded": True,
            "scorer_version": "1",
            "scoring_options": {"rules": "midog2022", "radius_mm": 0.0075, "group_key": "scanner"},
            "test_set": {"id": 1, "name": "synthetic-pages", "scoring_digest": "0" * 64},
            "submission": {"kind": "predictions", "sha256": submission.sha256, "size_bytes": submission.size_bytes},
            "runtime": {"worker": "seed-host:1", "scoring_seconds": 0.2},
        },
    )


def seed(session: Session) -> Seeded:
    now = utcnow()
    test_set = TestSet(
        name="synthetic-pages",
        manifest_path="/nonexistent/manifest.json",
        manifest_sha256="0" * 64,
        scoring_digest="0" * 64,
        case_count=len(SCANNERS) * len(CASE_SHARES),
        cases={name: {"groups": {"scanner": s}} for i, s in enumerate(SCANNERS) for name in case_names(i)},
    )
    challenge = Challenge(slug="midog-pages", title="MIDOG page test", description="Domain shift across scanners.")
    public = Phase(
        challenge=challenge,
        slug="prelim",
        title="Preliminary",
        test_set=test_set,
        opens_at=now - timedelta(days=3),
        closes_at=now + timedelta(days=30),
        seen_groups=list(SEEN),
    )
    hidden = Phase(
        challenge=challenge,
        slug="final",
        title="Final",
        test_set=test_set,
        opens_at=now - timedelta(days=1),
        closes_at=now + timedelta(days=10),
        leaderboard_visibility=LeaderboardVisibility.HIDDEN_UNTIL_CLOSE,
    )
    session.add_all([test_set, challenge, public, hidden])
    session.flush()
    for phase in (public, hidden):
        phase.scoring_fingerprint = scoring_fingerprint_of(session, phase)
    ids: dict[str, int] = {}
    hidden_id = 0
    for n, (team_name, (method, f1s, baseline)) in enumerate(ENTRIES.items()):
        team = Team(name=team_name, contact_email=f"{team_name.lower()}@example.org", is_approved=True)
        member = Participant(team=team, email=f"p@{team_name.lower()}.example.org", password_hash="x")
        session.add_all([team, member])
        session.flush()
        for phase, scores in ((public, f1s), (hidden, (HIDDEN_F1,) * len(SCANNERS))):
            submission = Submission(
                phase=phase,
                team=team,
                participant=member,
                kind=SubmissionKind.PREDICTIONS,
                file_path=f"x/{team_name}.json",
                original_filename="predictions.json",
                sha256="0" * 64,
                size_bytes=10,
                method_name=method,
                description=f"{method or 'A method'} described by {team_name}.",
                paper_url="https://example.org/paper" if n == 0 else "",
                is_baseline=baseline,
            )
            submission.created_at = now - timedelta(hours=10 - n)
            session.add(submission)
            session.flush()
            evaluation = Evaluation(
                submission=submission, status=EvaluationStatus.SUCCEEDED, finished_at=now, progress=1.0
            )
            session.add(evaluation)
            session.flush()
            session.add(_result(evaluation, submission, scores, phase.evaluation_version or 1))
            if phase is public:
                ids[team_name] = submission.id
            else:
                hidden_id = submission.id
    session.flush()
    for phase in (public, hidden):  # the boards as the rebuild task renders them
        refresh_standings(session, phase_id=phase.id)
    return Seeded(challenge.slug, public.id, hidden.id, ids, hidden_id)
