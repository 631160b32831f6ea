"""The words the API and the workers share: tasks, submission kinds, queues and their routing, task names.

One spelling of each, so that a queue or a task name cannot drift between the process that sends a message
and the one that runs it. Standard library only: every module of app/ and worker/ may import it (the scoring
core and the container contract included, which must not import app).
"""

from __future__ import annotations

import enum

# What a phase asks of a submission (a test set's manifest says which).
DETECTION = "detection"  # MIDOG Track 1: mitotic-figure coordinates per image
CLASSIFICATION = "classification"  # MIDOG 2025 Track 2: atypical or normal, per figure of a stack
TASKS = (DETECTION, CLASSIFICATION)


class SubmissionKind(enum.StrEnum):
    """What a team uploads: predictions to score, a model archive or a container image to run."""

    PREDICTIONS = "predictions"
    MODEL = "model"
    CONTAINER = "container"


# Queues: predictions files are scored on cpu workers; participant code runs on gpu workers.
CPU_QUEUE = "cpu"
GPU_QUEUE = "gpu"
QUEUES = (CPU_QUEUE, GPU_QUEUE)
# The reconciler's and the sweeper's beat runs on the cpu queue's worker: always present, never runs
# participant code; so do leaderboard rebuilds (numpy only).
BEAT_QUEUE = CPU_QUEUE
STANDINGS_QUEUE = CPU_QUEUE

# Task names (sent by name: the API never imports the worker's task modules).
RUN = "evaluation.run"
RUN_SHARD = "evaluation.run_shard"
MERGE = "evaluation.merge"
# Scoring of what a GPU host uploaded through the job protocol (app.runner): on the cpu queue, which alone
# reads ground truth.
SCORE_UPLOAD = "evaluation.score_upload"
RECONCILE = "evaluation.reconcile"
SWEEP = "maintenance.sweep"
REBUILD_STANDINGS = "standings.rebuild"


def queue_for(kind: str) -> str:
    """The queue that runs an evaluation of a submission of `kind`."""
    return CPU_QUEUE if kind == SubmissionKind.PREDICTIONS else GPU_QUEUE
