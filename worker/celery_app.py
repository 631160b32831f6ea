"""The Celery application: queues, reliability settings, time limits and the start-up ordering check.

Queues: `cpu` scores predictions files, `gpu` runs participant models and containers (one job per child).
Messages carry ids only (JSON). PostgreSQL is the truth; Redis only carries wake-ups, so every setting here
favours "run again, idempotently" over "lose silently": late acks, reject on worker lost, prefetch 1.

The limits must nest (docs/reliability-security.md, Time limits): sandbox timeout < soft limit < hard limit < broker
visibility timeout < stale-lease expiry. A live task therefore never holds an expired lease and is never
redelivered while it runs; a misordered configuration makes the worker refuse to start (`check_limits`).

Imports Celery, kombu and app.settings; must not import FastAPI, torch, worker.tasks at module level
(tasks are registered through `include`), nor anything that opens a connection at import time.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import Any, cast

from celery import Celery
from celery.signals import beat_embedded_init, celeryd_init
from kombu.transport import TRANSPORT_ALIASES
from kombu.transport import sqlalchemy as kombu_sqlalchemy

from worker.time_limits import Limits, LimitsError, check_limits
from worker.vocabulary import BEAT_QUEUE, CPU_QUEUE, GPU_QUEUE, QUEUES, RECONCILE, SWEEP, is_gpu_queue

logger = logging.getLogger(__name__)

# Imported by the worker at start: the tasks, and the self-report and sweeper hooked to its signals and beat.
TASK_MODULES = ("worker.tasks", "worker.heartbeat", "worker.maintenance")


def key_prefix() -> str:
    """`MIDOG_REDIS_KEY_PREFIX`: prepended to every Redis key of the broker and the result backend."""
    from app.settings import get_settings

    return get_settings().redis_key_prefix


def worker_identity() -> str:
    """`host:pid`, written into the lease so that a lease held by a dead process on this host can be seen."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _result_backend(broker_url: str) -> str:
    """Results are only used to merge shards; keep them beside the broker so no extra service is needed."""
    if broker_url.startswith(("redis://", "rediss://")):
        return broker_url
    if broker_url.startswith("sqla+sqlite:///"):
        broker_file = Path(broker_url.removeprefix("sqla+sqlite:///"))
        return f"db+sqlite:///{broker_file.with_name('celery-results.sqlite3')}"
    if broker_url.startswith("sqla+"):
        return "db+" + broker_url.removeprefix("sqla+")
    return "cache+memory://"


# The server-less broker of the embedded default (kombu's SQLAlchemy transport) polls its table; a short
# interval keeps a predictions file's accepted-to-scored time well under the 2 s target.
EMBEDDED_POLLING_INTERVAL_S = 0.1


class _EmbeddedChannel(kombu_sqlalchemy.Channel):
    """kombu's SQLAlchemy channel, but transport options (polling) are not passed to create_engine."""

    def _engine_from_config(self) -> Any:
        from sqlalchemy import create_engine

        return create_engine(self.connection.client.hostname, connect_args={"timeout": 30})


class EmbeddedTransport(kombu_sqlalchemy.Transport):
    Channel = _EmbeddedChannel


def _use_embedded_transport() -> None:
    # kombu resolves the `sqla+` scheme through this table, which exists to register transports.
    TRANSPORT_ALIASES["sqla"] = f"{__name__}:EmbeddedTransport"


def configure(
    app: Celery,
    *,
    broker_url: str,
    limits: Limits,
    sweep_interval_s: float = 600.0,
    redis_key_prefix: str | None = None,
) -> None:
    """Apply every reliability setting; shared by the API-side client and the worker. The Redis key prefix is
    the settings' unless given."""
    prefix = key_prefix() if redis_key_prefix is None else redis_key_prefix
    is_redis = broker_url.startswith(("redis://", "rediss://"))
    # Both option sets get the visibility timeout (docs/reliability-security.md, Time limits): Celery reads the result
    # backend's copy for chords and for results of acks-late tasks.
    broker_options: dict[str, Any] = {"visibility_timeout": limits.visibility_timeout_s}
    result_options: dict[str, Any] = {"visibility_timeout": limits.visibility_timeout_s}
    if broker_url.startswith("sqla+"):
        # No visibility timeout here: a message taken by a killed worker is recovered by the reconciler
        # (the evaluation's lease expires), never by the broker.
        _use_embedded_transport()
        broker_options = {"polling_interval": EMBEDDED_POLLING_INTERVAL_S}
        result_options = {}
    if is_redis:
        broker_options.update(
            socket_connect_timeout=5,
            socket_timeout=10,
            retry_on_timeout=True,
            # Messages of a dead worker come back after the visibility timeout; sweep for them often
            # enough that recovery takes about that long (kombu's default sweep runs every 100 s).
            unacked_restore_interval=max(1, min(10, round(limits.visibility_timeout_s / 4))),
            unacked_restore_throttle=1,
        )
        result_options["retry_policy"] = {"timeout": 5.0, "max_retries": 5}
        if prefix:
            # Several deployments (or test sessions) can share one Redis without seeing each other's keys.
            broker_options["global_keyprefix"] = prefix
            result_options["global_keyprefix"] = prefix
    app.conf.update(
        broker_url=broker_url,
        result_backend=_result_backend(broker_url),
        broker_transport_options=broker_options,
        result_backend_transport_options=result_options,
        broker_connection_retry_on_startup=True,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # A task that fails by an exception is acknowledged (the database records the failure); only a lost
        # worker puts the message back.
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        # How long a lost child's job waits for a late result before it is requeued; results are not used
        # by evaluation.run (the database is the truth), so a short wait only speeds up recovery.
        worker_lost_wait=3.0,
        task_soft_time_limit=limits.soft_time_limit_s,
        task_time_limit=limits.time_limit_s,
        task_ignore_result=True,
        task_track_started=False,
        task_default_queue=CPU_QUEUE,
        # A dict is expanded by Celery into kombu Queues bound to a direct exchange of the same name.
        task_queues={name: {"exchange": name, "routing_key": name} for name in QUEUES},
        task_default_exchange=CPU_QUEUE,
        task_default_routing_key=CPU_QUEUE,
        task_create_missing_queues=False,
        result_expires=3600,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        broker_pool_limit=4,
        timezone="UTC",
        beat_schedule={
            RECONCILE: {
                "task": RECONCILE,
                "schedule": limits.reconcile_interval_s,
                "options": {"queue": BEAT_QUEUE, "expires": limits.reconcile_interval_s},
            },
            SWEEP: {
                "task": SWEEP,
                "schedule": sweep_interval_s,
                "options": {"queue": BEAT_QUEUE, "expires": sweep_interval_s},
            },
        },
    )
    app.conf.midog_limits = limits


def create_app(*, broker_url: str | None = None, limits: Limits | None = None) -> Celery:
    """A configured Celery app; tasks are imported lazily from TASK_MODULES."""
    from app.settings import get_settings

    settings = get_settings()
    celery = Celery("midog_eval", include=list(TASK_MODULES))
    configure(
        celery,
        broker_url=broker_url or settings.broker_url,
        limits=limits if limits is not None else Limits.from_settings(settings),
        sweep_interval_s=settings.sweep_interval_s,
    )
    return celery


def limits_of(celery: Celery) -> Limits:
    """The limits this app was configured with."""
    limits = celery.conf.get("midog_limits")
    assert isinstance(limits, Limits)
    return limits


app = create_app()


def _refuse_misordered_settings(*, conf: Any = None, options: dict[str, Any] | None = None, **_: Any) -> None:
    """Stop the worker before it consumes anything when the limits do not nest; pin GPU-queue options."""
    try:
        check_limits(limits_of(app))
    except LimitsError as exc:
        # SystemExit passes through Celery's signal dispatcher (which swallows Exception): the process ends.
        raise SystemExit(f"midog-eval worker refuses to start: {exc}") from exc
    options = options or {}
    queues = options.get("queues") or [CPU_QUEUE, GPU_QUEUE]
    if isinstance(queues, str):
        queues = queues.split(",")
    if not any(is_gpu_queue(q) for q in queues) or conf is None:
        return
    # One participant job per GPU and a fresh process per job: no state (or GPU memory) leaks between jobs.
    for option, setting in (
        ("concurrency", "worker_concurrency"),
        ("max_tasks_per_child", "worker_max_tasks_per_child"),
    ):
        given = options.get(option)
        if given not in (None, 1, "1"):
            raise SystemExit(f"midog-eval worker refuses to start: a gpu-queue worker needs {option}=1, got {given}")
        conf[setting] = 1


def _reap_leftover_sandboxes(*, options: dict[str, Any] | None = None, **_: Any) -> None:
    """A gpu-queue worker first reaps the sandbox runs a dead predecessor left (worker.model_runner)."""
    queues = (options or {}).get("queues") or [CPU_QUEUE, GPU_QUEUE]
    if isinstance(queues, str):
        queues = queues.split(",")
    if not any(is_gpu_queue(q) for q in queues):
        return
    from app.settings import get_settings
    from worker.model_runner import reap_leftovers

    try:
        reap_leftovers(get_settings())
    except Exception:
        # A sweep that fails must not keep the worker from starting; each run reaps its own label again.
        logger.exception("the start-up sweep of leftover sandbox runs failed")


def _beat_dies_with_its_worker(**_: Any) -> None:
    """`-B` runs beat in a child process of the worker; pool children die with the worker already."""
    from worker.process_tree import die_with_parent

    die_with_parent()


# Connected by call rather than decorator: Celery's signal API is untyped.
cast(Any, celeryd_init).connect(_refuse_misordered_settings, weak=False)
cast(Any, celeryd_init).connect(_reap_leftover_sandboxes, weak=False)
cast(Any, beat_embedded_init).connect(_beat_dies_with_its_worker, weak=False)
