"""SQLAlchemy 2.0 ORM models of the service (one MetaData, naming convention in base.py).

Importing this package must not import FastAPI, Celery, torch or worker.tasks.
"""

from app.models.audit import AuditEvent
from app.models.base import Base, UTCDateTime, utcnow
from app.models.challenge import (
    Challenge,
    EntryPolicy,
    LeaderboardVisibility,
    Phase,
    PhaseKind,
    RankingMetric,
    RunMode,
    SubmissionKind,
)
from app.models.leaderboard import LeaderboardSnapshot
from app.models.submission import (
    ACTIVE_STATUSES,
    TERMINAL_STATUSES,
    Evaluation,
    EvaluationStatus,
    Result,
    Submission,
)
from app.models.team import ApiToken, Participant, Team, TeamInvitation, TokenScope
from app.models.test_set import TestSet
from app.models.worker import WorkerNode

__all__ = [
    "ACTIVE_STATUSES",
    "TERMINAL_STATUSES",
    "ApiToken",
    "AuditEvent",
    "Base",
    "Challenge",
    "EntryPolicy",
    "Evaluation",
    "EvaluationStatus",
    "LeaderboardSnapshot",
    "LeaderboardVisibility",
    "Participant",
    "Phase",
    "PhaseKind",
    "RankingMetric",
    "Result",
    "RunMode",
    "Submission",
    "SubmissionKind",
    "Team",
    "TeamInvitation",
    "TestSet",
    "TokenScope",
    "UTCDateTime",
    "WorkerNode",
    "utcnow",
]
