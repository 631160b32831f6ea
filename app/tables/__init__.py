"""SQLAlchemy 2.0 ORM models of the service (one MetaData, naming convention in base.py).

Importing this package must not import FastAPI, Celery, torch or worker.tasks.
"""

from app.tables.audit import AuditEvent
from app.tables.base import Base, UTCDateTime, utcnow
from app.tables.challenge import (
    Challenge,
    EntryPolicy,
    LeaderboardVisibility,
    Phase,
    PhaseKind,
    RankingMetric,
    RunMode,
    SubmissionKind,
)
from app.tables.leaderboard import LeaderboardSnapshot
from app.tables.submission import (
    ACTIVE_STATUSES,
    TERMINAL_STATUSES,
    Evaluation,
    EvaluationStatus,
    Result,
    Submission,
)
from app.tables.team import ApiToken, Participant, Team, TeamInvitation, TokenScope
from app.tables.test_set import TestSet, TestSetFile
from app.tables.worker import WorkerNode

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
    "TestSetFile",
    "TokenScope",
    "UTCDateTime",
    "WorkerNode",
    "utcnow",
]
