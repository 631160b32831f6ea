"""Celery tasks, thin: claim the row -> run the pipeline with no transaction open -> persist, each step short.

- `evaluation.run(evaluation_id=)`: one evaluation; for model/container submissions of a phase whose
  `scoring_options["shard_by"]` names a group key (e.g. "scanner"), the hidden set is split into shards run
  as parallel `evaluation.run_shard` tasks on the gpu queue and merged by `evaluation.merge` (a chord).
- `evaluation.score_upload(evaluation_id=, attempt=)`: scores what a GPU host uploaded through the job
  protocol (app.runner): the output file is read and checked again here, then scored with the ground truth,
  which only this side reads.
- `evaluation.reconcile()`: periodic (beat): expires stale leases, re-sends rows waiting with no message and
  rebuilds leaderboards left stale (the backstop).
- `standings.rebuild(phase_id=)`: one phase's leaderboard, sent by app.lifecycle after a commit that changed it.

Every status write goes through app.lifecycle.

Errors: SubmissionError -> failed with its one line; RetryableError and lost database connections -> retried
up to the attempt cap; the soft time limit -> failed "time limit exceeded"; InfrastructureError (a sandbox
control missing here) and anything else -> failed with a generic message, the detail kept for organisers.
Failures that are the platform's (retries exhausted, crash loops, InfrastructureError, bugs) are marked
`infrastructure_failure` and cost the team no quota.

Imports Celery, SQLAlchemy, app.tables/app.db/app.settings and the worker; never FastAPI or torch.
"""

from __future__ import annotations

import base64
import json
import logging
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar, cast

from celery import Task, chord
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy import create_engine, select, text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import Session

from app import lifecycle
from app.db import get_engine, session_scope
from app.leaderboard.standings import rebuild_phase, rebuild_stale
from app.scoring import canonical_options
from app.settings import get_settings
from app.storage import evaluation_logs_dir, runner_upload_dir
from app.tables import Evaluation, Phase, Submission
from app.tables import TestSet as TestSetRow
from app.tables.base import utcnow
from worker.celery_app import app, key_prefix, limits_of, worker_identity
from worker.errors import InfrastructureError, RetryableError, SubmissionError
from worker.lease import LeaseKeeper, LeaseLostError
from worker.pipeline import (
    Outcome,
    PipelineInput,
    merge_shards,
    open_test_set,
    predict,
    predict_stacks,
    predictions_from_json,
    predictions_to_json,
    score,
    score_file,
    score_stacks,
    shard_plan,
)
from worker.provenance import ScoringBasis, check_test_set, provenance
from worker.runners import TIME_LIMIT_MESSAGE, RunnerNotConfiguredError
from worker.vocabulary import (
    CLASSIFICATION,
    CPU_QUEUE,
    DEFAULT_GPU_CLASS,
    DETECTION,
    MERGE,
    QUEUES,
    REBUILD_STANDINGS,
    RECONCILE,
    RUN,
    RUN_SHARD,
    SCORE_UPLOAD,
    SubmissionKind,
    gpu_queue,
    queue_for,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")


# The database can be down for a while (restart, failover): writes of a finished run are retried this long.
PERSIST_RETRY_S = 60.0


def enqueue(evaluation_id: int, kind: str, gpu_class: str = DEFAULT_GPU_CLASS) -> None:
    app.send_task(RUN, kwargs={"evaluation_id": evaluation_id}, queue=queue_for(kind, gpu_class))


def is_transient(exc: BaseException) -> bool:
    """A database that is down or restarting (retry), as opposed to a bug such as a constraint violation."""
    if isinstance(exc, OperationalError | InterfaceError | PoolTimeoutError):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


def _task(**options: Any) -> Callable[[Callable[..., Any]], Any]:
    """`app.task` with a type (Celery's decorator is untyped)."""
    return cast(Callable[[Callable[..., Any]], Any], app.task(**options))


def with_db_retry(step: Callable[[Session], T], *, budget_s: float = PERSIST_RETRY_S) -> T:
    """Run `step` in its own transaction, retrying while the database is unreachable, up to `budget_s`."""
    deadline = time.monotonic() + budget_s
    delay = 0.2
    while True:
        try:
            with session_scope() as session:
                return step(session)
        except (DBAPIError, PoolTimeoutError) as exc:
            if not is_transient(exc):
                raise
            if time.monotonic() + delay > deadline:
                raise RetryableError(f"database unavailable: {exc.__class__.__name__}") from exc
            logger.warning("database unavailable (%s); retrying in %.1fs", exc.__class__.__name__, delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def _load_input(session: Session, evaluation_id: int) -> tuple[PipelineInput, dict[str, Any], ScoringBasis]:
    evaluation, submission, phase = session.execute(
        select(Evaluation, Submission, Phase)
        .join(Submission, Submission.id == Evaluation.submission_id)
        .join(Phase, Phase.id == Submission.phase_id)
        .where(Evaluation.id == evaluation_id)
    ).one()
    if phase.test_set_id is None:
        raise RuntimeError(f"phase {phase.id} has no test set")
    test_set = session.get(TestSetRow, phase.test_set_id)
    assert test_set is not None
    settings = get_settings()
    options = canonical_options(phase.scoring_options)
    limits = limits_of(app)
    inp = PipelineInput(
        evaluation_id=evaluation.id,
        kind=str(submission.kind),
        artifact=settings.storage_path / submission.file_path,
        test_set_dir=Path(test_set.manifest_path).parent,
        work_dir=settings.data_dir / "work" / f"evaluation-{evaluation.id}",
        timeout_s=min(float(phase.time_limit_s), limits.sandbox_timeout_s),
        rules=str(options["rules"]),
        bootstrap=int(options["bootstrap"]),
        seed=int(options["seed"]),
        group_key=str(options["group_key"]),
        radius_mm=float(options["radius_mm"]),
        hidden=bool(options["hidden"]),
        input_layout=str(options["input_layout"]) if options["input_layout"] else None,
        memory_bytes=int(phase.memory_limit_mb) * 1024**2,
        task=str(options["task"]),
        seen_groups=tuple(phase.seen_groups or ()),
        model_archive=settings.storage_path / submission.model_path if submission.model_path else None,
        run_mode=str(submission.run_mode or phase.run_mode),
        show_logs=bool(phase.show_logs),
        logs_dir=evaluation_logs_dir(settings.storage_path, evaluation.id),
    )
    basis = ScoringBasis(
        options=options,
        test_set_id=test_set.id,
        test_set_name=test_set.name,
        test_set_digest=test_set.scoring_digest,
        phase_fingerprint=phase.scoring_fingerprint,
        submission_kind=str(submission.kind),
        submission_sha256=submission.sha256,
        submission_bytes=int(submission.size_bytes),
        model_sha256=submission.model_sha256,
    )
    return inp, options, basis


class _Run:
    """One claimed run: its identity (id, attempt, owner) and the steps that must hold the lease."""

    def __init__(self, evaluation_id: int, attempt: int, owner: str) -> None:
        self.evaluation_id = evaluation_id
        self.attempt = attempt
        self.owner = owner

    def progress(self, fraction: float, message: str) -> None:
        """Record progress; stop the run when the row was cancelled or taken over meanwhile."""
        try:
            with session_scope() as session:
                held = lifecycle.report_progress(
                    session,
                    evaluation_id=self.evaluation_id,
                    owner=self.owner,
                    attempt=self.attempt,
                    progress=fraction,
                    message=message,
                )
        except (DBAPIError, PoolTimeoutError) as exc:
            if not is_transient(exc):
                raise
            # Progress is best effort: a database hiccup must not fail a run that is otherwise fine.
            logger.warning("evaluation %s: progress not recorded", self.evaluation_id)
            return
        if not held:
            raise LeaseLostError(f"evaluation {self.evaluation_id} attempt {self.attempt} no longer holds its lease")

    def keep_lease(self) -> LeaseKeeper:
        """Renew the lease while participant code runs; stop the run when it is cancelled or taken over."""
        limits = limits_of(app)

        def renew() -> bool | None:
            try:
                with session_scope() as session:
                    return lifecycle.renew_lease(
                        session,
                        evaluation_id=self.evaluation_id,
                        owner=self.owner,
                        attempt=self.attempt,
                        new_owner=self.owner,
                        lease_s=limits.lease_expiry_s,
                    )
            except (DBAPIError, PoolTimeoutError) as exc:
                if not is_transient(exc):
                    raise
                return None  # the database is away; the lease lasts long enough for it to come back

        what = f"evaluation {self.evaluation_id} attempt {self.attempt}"
        return LeaseKeeper(renew, interval_s=limits.lease_heartbeat_s, what=what)

    def succeed(self, outcome: Outcome, gpu_seconds: float, basis: ScoringBasis, runtime: dict[str, Any]) -> bool:
        if basis.fingerprint != basis.phase_fingerprint:
            # Stored all the same (the participant sees it), but never ranked beside the phase's other results.
            logger.warning(
                "evaluation %s scored under fingerprint %s, its phase ranks %s: re-evaluate the phase to adopt it",
                self.evaluation_id,
                basis.fingerprint[:12],
                (basis.phase_fingerprint or "none")[:12],
            )
        scores = {
            **asdict(outcome),
            "scoring_fingerprint": basis.fingerprint,
            "provenance": provenance(basis, runtime={"worker": self.owner, **runtime}),
        }
        return with_db_retry(
            lambda session: lifecycle.succeed(
                session,
                evaluation_id=self.evaluation_id,
                owner=self.owner,
                attempt=self.attempt,
                scores=scores,
                gpu_seconds=gpu_seconds,
            )
        )

    def fail(self, message: str, detail: str = "", *, infrastructure: bool = False) -> bool:
        return with_db_retry(
            lambda session: lifecycle.fail(
                session,
                evaluation_id=self.evaluation_id,
                owner=self.owner,
                attempt=self.attempt,
                message=message,
                detail=detail,
                infrastructure=infrastructure,
            )
        )

    def fail_infrastructure(self, detail: str) -> bool:
        """The platform's fault: a generic line for the participant, `detail` for organisers, no quota spent."""
        return self.fail(lifecycle.GENERIC_FAILURE, detail, infrastructure=True)

    def release(self, detail: str) -> str | None:
        status = with_db_retry(
            lambda session: lifecycle.release_for_retry(
                session,
                evaluation_id=self.evaluation_id,
                owner=self.owner,
                attempt=self.attempt,
                max_attempts=limits_of(app).max_attempts,
                detail=detail,
            )
        )
        return None if status is None else str(status)


@contextmanager
def _outcomes(run: _Run, task: Task) -> Iterator[None]:
    """Map exceptions of a claimed run onto the state machine (see the module docstring)."""
    try:
        yield
    except LeaseLostError as exc:
        logger.info("%s; stopped", exc)
    except SubmissionError as exc:
        run.fail(str(exc) or "the submission could not be evaluated", traceback.format_exc())
    except SoftTimeLimitExceeded:
        run.fail(TIME_LIMIT_MESSAGE, traceback.format_exc())
    except InfrastructureError as exc:
        logger.error("evaluation %s attempt %s cannot run here: %s", run.evaluation_id, run.attempt, exc)
        run.fail_infrastructure(f"{exc}\n\n{traceback.format_exc()}")
    except (RetryableError, DBAPIError, PoolTimeoutError) as exc:
        if not isinstance(exc, RetryableError) and not is_transient(exc):
            logger.exception("evaluation %s attempt %s failed", run.evaluation_id, run.attempt)
            run.fail_infrastructure(traceback.format_exc())
            return
        status = run.release(traceback.format_exc())
        if status == "retrying":
            # A fresh message, acknowledged separately; the reconciler re-sends it should it ever be lost.
            raise task.retry(countdown=min(2**run.attempt, 60), exc=exc, max_retries=None) from exc
    except RunnerNotConfiguredError as exc:
        run.fail_infrastructure(str(exc))
    except Exception:
        logger.exception("evaluation %s attempt %s failed", run.evaluation_id, run.attempt)
        run.fail_infrastructure(traceback.format_exc())


def _claim(evaluation_id: int) -> lifecycle.Claim:
    limits = limits_of(app)
    owner = worker_identity()
    return with_db_retry(
        lambda session: lifecycle.claim(
            session,
            evaluation_id=evaluation_id,
            owner=owner,
            lease_s=limits.lease_expiry_s,
            max_attempts=limits.max_attempts,
        ),
        budget_s=10.0,
    )


@_task(name=RUN, bind=True)
def run_evaluation(self: Task, *, evaluation_id: int) -> str:
    """Claim, run and persist one evaluation; a lost claim returns at once without running anything."""
    try:
        claimed = _claim(evaluation_id)
    except RetryableError as exc:
        raise self.retry(countdown=2, exc=exc, max_retries=None) from exc
    if not claimed.claimed:
        logger.info("evaluation %s not run: %s", evaluation_id, claimed.outcome)
        return str(claimed.outcome)
    run = _Run(evaluation_id, claimed.attempt, claimed.owner)
    # From here on every failure, reading the inputs included, ends in a recorded state (never a loop).
    with _outcomes(run, self):
        inp, options, basis = with_db_retry(lambda session: _load_input(session, evaluation_id))
        check_test_set(inp.test_set_dir, basis)
        test_set = open_test_set(inp.test_set_dir)
        shard_by = options.get("shard_by")
        if inp.kind != SubmissionKind.PREDICTIONS and shard_by and inp.task == DETECTION:
            shards = shard_plan(test_set, key=str(shard_by))
            if len(shards) > 1:
                _start_shards(run, shards)
                return "sharded"
        started_at, started = utcnow(), time.monotonic()
        run_info: dict[str, Any] = {}
        case_features: dict[str, Any] = {}
        cases = [c.name for c in test_set.cases]
        with run.keep_lease():
            if inp.task == CLASSIFICATION:
                stacks = predict_stacks(inp, test_set, progress=run.progress, run_info=run_info)
            else:
                predictions = predict(
                    inp, test_set, cases, progress=run.progress, run_info=run_info, case_features=case_features
                )
        predicted = time.monotonic()
        gpu_seconds = 0.0 if inp.kind == SubmissionKind.PREDICTIONS else predicted - started
        if inp.task == CLASSIFICATION:
            outcome = score_stacks(inp, test_set, stacks, progress=run.progress)
        else:
            outcome = score(inp, test_set, predictions, progress=run.progress, case_features=case_features)
        runtime = {
            **run_info,
            "started_at": started_at.isoformat(),
            "run_seconds": round(predicted - started, 3),
            "scoring_seconds": round(time.monotonic() - predicted, 3),
        }
        if not run.succeed(outcome, gpu_seconds, basis, runtime):
            logger.warning("evaluation %s: lease lost before the result was written", evaluation_id)
            return "lease lost"
        return "succeeded"
    return "failed"


def _shard_owner(run: _Run) -> str:
    # Not of the form host:pid, so the lease outlives the dispatching process; running shards renew it, and
    # the reconciler while shards still wait in the broker.
    return f"{lifecycle.SHARDED_OWNER_PREFIX}{run.evaluation_id}/{run.attempt}"


def _start_shards(run: _Run, shards: list[tuple[str, ...]]) -> None:
    owner = _shard_owner(run)
    lease_s = limits_of(app).lease_expiry_s

    def hand_over(session: Session) -> bool:
        return lifecycle.renew_lease(
            session,
            evaluation_id=run.evaluation_id,
            owner=run.owner,
            attempt=run.attempt,
            new_owner=owner,
            lease_s=lease_s,
        )

    def gpu_class(session: Session) -> str:
        found = session.scalar(
            select(Phase.gpu_class)
            .join(Submission, Submission.phase_id == Phase.id)
            .join(Evaluation, Evaluation.submission_id == Submission.id)
            .where(Evaluation.id == run.evaluation_id)
        )
        return str(found or DEFAULT_GPU_CLASS)

    if not with_db_retry(hand_over):
        return
    run.owner = owner
    run.progress(0.05, f"running {len(shards)} shards")
    ids = {"evaluation_id": run.evaluation_id, "attempt": run.attempt, "owner": owner}
    # the shards run on the queue of the phase's GPU class, as the whole run would
    queue = gpu_queue(with_db_retry(gpu_class))
    header = [run_shard.si(**ids, index=i, cases=list(cases)).set(queue=queue) for i, cases in enumerate(shards)]
    chord(header)(merge_shards_task.si(**ids).set(queue=CPU_QUEUE))


def _shard_path(inp: PipelineInput, attempt: int, index: int) -> Path:
    return inp.work_dir / f"attempt-{attempt}" / "shards" / f"{index}.json"


def _load_held(evaluation_id: int, owner: str, attempt: int) -> tuple[PipelineInput, ScoringBasis] | None:
    lease_s = limits_of(app).lease_expiry_s

    def step(session: Session) -> tuple[PipelineInput, ScoringBasis] | None:
        if not lifecycle.renew_lease(
            session,
            evaluation_id=evaluation_id,
            owner=owner,
            attempt=attempt,
            new_owner=owner,
            lease_s=lease_s,
        ):
            return None
        inp, _options, basis = _load_input(session, evaluation_id)
        return inp, basis

    return with_db_retry(step)


@_task(name=RUN_SHARD, bind=True, ignore_result=False)
def run_shard(self: Task, *, evaluation_id: int, attempt: int, owner: str, index: int, cases: list[str]) -> str | None:
    """Run the submission on one shard's cases; writes the shard's predictions and returns the file path."""
    held = _load_held(evaluation_id, owner, attempt)
    if held is None:
        return None
    inp, basis = held
    run = _Run(evaluation_id, attempt, owner)
    path = _shard_path(inp, attempt, index)
    with _outcomes(run, self):
        check_test_set(inp.test_set_dir, basis)
        test_set = open_test_set(inp.test_set_dir)
        started = time.monotonic()
        run_info: dict[str, Any] = {"worker": worker_identity(), "cases": len(cases)}
        with run.keep_lease():
            predictions = predict(inp, test_set, cases, run_name=f"attempt-{attempt}-shard-{index}", run_info=run_info)
        run_info["run_seconds"] = round(time.monotonic() - started, 3)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".tmp")
        partial.write_text(json.dumps(predictions_to_json(predictions)), encoding="utf-8")
        path.with_suffix(".run.json").write_text(json.dumps(run_info), encoding="utf-8")
        partial.replace(path)
        return str(path)
    return None


@_task(name=MERGE, bind=True)
def merge_shards_task(self: Task, shard_paths: Any = None, *, evaluation_id: int, attempt: int, owner: str) -> str:
    """Merge the shards of one run and score them exactly as a single run would have been scored."""
    held = _load_held(evaluation_id, owner, attempt)
    if held is None:
        return "lease lost"
    inp, basis = held
    run = _Run(evaluation_id, attempt, owner)
    with _outcomes(run, self):
        check_test_set(inp.test_set_dir, basis)
        test_set = open_test_set(inp.test_set_dir)
        directory = inp.work_dir / f"attempt-{attempt}" / "shards"
        files = sorted((p for p in directory.glob("*.json") if p.stem.isdigit()), key=lambda p: int(p.stem))
        shards = [predictions_from_json(json.loads(p.read_text(encoding="utf-8"))) for p in files]
        runs = [_shard_run_info(p.with_suffix(".run.json")) for p in files]
        started = time.monotonic()
        outcome = score(inp, test_set, merge_shards(shards), progress=run.progress)
        runtime = {"shards": runs, "scoring_seconds": round(time.monotonic() - started, 3)}
        gpu_seconds = sum(float(r.get("run_seconds", 0.0)) for r in runs)
        return "succeeded" if run.succeed(outcome, gpu_seconds, basis, runtime) else "lease lost"
    return "failed"


@_task(name=SCORE_UPLOAD, bind=True)
def score_upload(self: Task, *, evaluation_id: int, attempt: int) -> str:
    """Score the output a GPU host uploaded for `attempt` (app.runner), exactly as a run here is scored."""
    owner = f"{lifecycle.SCORING_OWNER_PREFIX}{evaluation_id}/{attempt}"
    held = _load_held(evaluation_id, owner, attempt)
    if held is None:
        return "lease lost"
    inp, basis = held
    run = _Run(evaluation_id, attempt, owner)
    directory = runner_upload_dir(get_settings().data_dir, evaluation_id, attempt)
    with _outcomes(run, self):
        check_test_set(inp.test_set_dir, basis)
        test_set = open_test_set(inp.test_set_dir)
        record = _shard_run_info(directory / "run.json")
        run_info = record.get("run_info") if isinstance(record.get("run_info"), dict) else {}
        features = _uploaded_features(directory, [c.name for c in test_set.cases])
        started = time.monotonic()
        output = directory / "predictions.json"
        outcome = score_file(inp, test_set, output, progress=run.progress, case_features=features)
        run_seconds = float(record.get("run_seconds") or 0.0)
        runtime = {
            **(run_info or {}),
            "run_seconds": round(run_seconds, 3),
            "scoring_seconds": round(time.monotonic() - started, 3),
        }
        return "succeeded" if run.succeed(outcome, run_seconds, basis, runtime) else "lease lost"
    return "failed"


def _uploaded_features(directory: Path, cases: list[str]) -> dict[str, Any] | None:
    """The features a GPU host uploaded ({case: [numbers]} or {"error": line}), checked here as if the run had
    written them on this host (worker.evaluation.representation); None when none were uploaded."""
    import tempfile

    from worker.evaluation.representation import FeaturesError, read_case_features

    path = directory / "features.json"
    if not path.is_file():
        return None
    try:
        uploaded = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return {"error": "the features could not be read"}
    if not isinstance(uploaded, dict) or not uploaded:
        return None
    if "error" in uploaded:
        return {"error": str(uploaded["error"])[:500]}
    with tempfile.TemporaryDirectory(dir=directory) as scratch:
        for case, vector in uploaded.items():
            if isinstance(case, str) and "/" not in case and not case.startswith("."):
                (Path(scratch) / f"{Path(case).stem}.json").write_text(json.dumps({"features": vector}))
        try:
            return dict(read_case_features(Path(scratch), cases))
        except FeaturesError as exc:
            return {"error": str(exc)}


def _shard_run_info(path: Path) -> dict[str, Any]:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def _live_evaluation_ids() -> set[int] | None:
    """Evaluation ids with a message in the broker (waiting, or unacknowledged on Redis); None if unknowable.

    On the embedded SQLite broker only visible messages count: one taken by a worker that died is never
    given back there, so its row must look message-less to be re-sent.
    """
    url = str(app.conf.broker_url)
    if url.startswith(("redis://", "rediss://")):
        raw = _redis_messages(url)
    elif url.startswith("sqla+"):
        raw = _embedded_messages(url.removeprefix("sqla+"))
    else:
        return None
    ids: set[int] = set()
    for item in raw:
        try:
            message = json.loads(item)
            if isinstance(message, list):  # Redis unacked entries: [message, exchange, routing key]
                message = message[0]
            body = json.loads(base64.b64decode(message["body"]))
            evaluation_id = body[1].get("evaluation_id")
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            continue
        if isinstance(evaluation_id, int):
            ids.add(evaluation_id)
    return ids


def _redis_messages(url: str) -> list[Any]:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=10)
    try:
        raw: list[Any] = []
        prefix = key_prefix()
        for queue in QUEUES:
            raw.extend(cast(list[Any], client.lrange(f"{prefix}{queue}", 0, -1)))
        raw.extend(cast(list[Any], client.hvals(f"{prefix}unacked")))
        return raw
    finally:
        client.close()


def _embedded_messages(url: str) -> list[Any]:
    engine = create_engine(url, connect_args={"timeout": 30})
    try:
        with engine.connect() as connection:
            return list(connection.execute(text("SELECT payload FROM kombu_message WHERE visible")).scalars())
    except OperationalError:
        return []  # no broker table yet: nothing was ever sent
    finally:
        engine.dispose()


@_task(name=RECONCILE)
def reconcile() -> dict[str, list[int]]:
    """Renew the leases of sharded runs whose shards still wait in the broker; expire stale leases; re-send
    evaluations that wait with no message in the broker; rebuild leaderboards whose rebuild after commit never
    ran. Idempotent."""
    limits = limits_of(app)
    live = _live_evaluation_ids()

    def renew_and_expire(session: Session) -> list[int]:
        lifecycle.renew_waiting_shards(session, evaluation_ids=sorted(live or ()), lease_s=limits.lease_expiry_s)
        return lifecycle.expire_stale_leases(session, max_attempts=limits.max_attempts)

    expired = with_db_retry(renew_and_expire)
    cutoff = utcnow() - timedelta(seconds=limits.requeue_after_s)

    def find(session: Session) -> list[lifecycle.Pending]:
        return lifecycle.waiting(session, queued_before=cutoff, exclude=sorted(live or ()))

    pending = with_db_retry(find)
    # Rows released just now are sent at once: their run is known to be gone.
    released = set(expired)

    def find_released(session: Session) -> list[lifecycle.Pending]:
        return lifecycle.waiting(session, queued_before=utcnow(), exclude=sorted(live or ()))

    if released:
        pending += [p for p in with_db_retry(find_released) if p.evaluation_id in released]
    sent: list[int] = []
    for item in {p.evaluation_id: p for p in pending}.values():
        enqueue(item.evaluation_id, item.kind, item.gpu_class)
        sent.append(item.evaluation_id)
    with_db_retry(lambda session: lifecycle.mark_requeued(session, evaluation_ids=sent))
    rebuilt = rebuild_stale(get_engine())
    if expired or sent or rebuilt:
        logger.info("reconcile: expired %s, re-sent %s, leaderboards rebuilt %s", expired, sent, rebuilt)
    return {"expired": expired, "requeued": sent, "rebuilt": rebuilt}


@_task(name=REBUILD_STANDINGS)
def rebuild_standings(phase_id: int) -> bool:
    """Rebuild one phase's leaderboard (app.leaderboard.standings.rebuild_phase); True when stored.

    A failure is logged and left to the reconciler's backstop, which rebuilds every stale board."""
    try:
        return rebuild_phase(get_engine(), phase_id)
    except Exception:
        logger.exception("standings of phase %s not rebuilt; left to the reconciler", phase_id)
        return False
