"""The words the API and the workers share: tasks, submission kinds, queues and their routing, task names.

One spelling of each, so that a queue or a task name cannot drift between the process that sends a message
and the one that runs it. Standard library only: every module of app/ and worker/ may import it (the scoring
core and the container contract included, which must not import app).
"""

from __future__ import annotations

import enum
import re

# What a phase asks of a submission (a test set's manifest says which).
DETECTION = "detection"  # MIDOG Track 1: mitotic-figure coordinates per image
CLASSIFICATION = "classification"  # MIDOG 2025 Track 2: atypical or normal, per figure of a stack
TASKS = (DETECTION, CLASSIFICATION)


class SubmissionKind(enum.StrEnum):
    """What a team uploads: predictions to score, a model archive or a container image to run."""

    PREDICTIONS = "predictions"
    MODEL = "model"
    CONTAINER = "container"


# Queues: predictions files are scored on cpu workers; participant code runs on gpu workers, one queue per GPU
# class: a phase names its class (`Phase.gpu_class`, default `gpu`), and its model and container runs go to
# that class's queue, `gpu` for the default class and `gpu-<class>` for any other.
CPU_QUEUE = "cpu"
GPU_QUEUE = "gpu"
QUEUES = (CPU_QUEUE, GPU_QUEUE)
DEFAULT_GPU_CLASS = "gpu"
# A GPU class: a short slug (lower-case letters and digits, single dashes inside, at most 32 characters).
GPU_CLASS_PATTERN = r"[a-z0-9]+(-[a-z0-9]+)*"
GPU_CLASS_MAX_LENGTH = 32
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


def is_gpu_class(name: str) -> bool:
    """Whether `name` is a GPU class's slug (`gpu`, `a100`, `h100-80g`)."""
    return len(name) <= GPU_CLASS_MAX_LENGTH and re.fullmatch(GPU_CLASS_PATTERN, name) is not None


def gpu_queue(gpu_class: str) -> str:
    """The queue of GPU class `gpu_class`: `gpu` for the default class, `gpu-<class>` for the others."""
    if not is_gpu_class(gpu_class):
        raise ValueError(f"GPU class {gpu_class!r}: lower-case letters and digits, single dashes inside, at most 32")
    return GPU_QUEUE if gpu_class == DEFAULT_GPU_CLASS else f"{GPU_QUEUE}-{gpu_class}"


def is_gpu_queue(queue: str) -> bool:
    """Whether `queue` runs participant code: `gpu` or the queue of another GPU class (`gpu-<class>`); its
    workers take one job at a time, a fresh process per job."""
    return queue == GPU_QUEUE or (queue.startswith(f"{GPU_QUEUE}-") and is_gpu_class(queue[len(GPU_QUEUE) + 1 :]))


def queue_for(kind: str, gpu_class: str = DEFAULT_GPU_CLASS) -> str:
    """The queue that runs an evaluation of a submission of `kind` in a phase of GPU class `gpu_class`: the
    only routing rule (predictions are scored on the cpu queue whatever the class)."""
    return CPU_QUEUE if kind == SubmissionKind.PREDICTIONS else gpu_queue(gpu_class)
