"""Celery settings and the start-up ordering check (R4: misordered limits -> the worker refuses to start)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from worker.celery_app import configure
from worker.time_limits import Limits, LimitsError, check_limits

REPO_ROOT = Path(__file__).resolve().parents[2]
ORDER = ["sandbox_timeout_s", "soft_time_limit_s", "time_limit_s", "visibility_timeout_s", "lease_expiry_s"]


def test_the_default_limits_nest() -> None:
    check_limits(Limits())


def test_the_settings_take_their_default_limits_from_limits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One source of the defaults: a server's settings without MIDOG_ time limits are Limits() (on Redis; the
    server-less broker reconciles sooner)."""
    from dataclasses import fields

    from app.settings import Settings

    for field in fields(Limits):
        monkeypatch.delenv(f"MIDOG_{field.name.upper()}", raising=False)
    settings = Settings(_env_file=None, data_dir=tmp_path, broker_url="redis://127.0.0.1:6379/0")
    assert Limits.from_settings(settings) == Limits()
    embedded = Settings(_env_file=None, data_dir=tmp_path, broker_url="")
    assert embedded.reconcile_interval_s is not None
    assert embedded.reconcile_interval_s < Limits().reconcile_interval_s


@pytest.mark.parametrize("lower", range(len(ORDER) - 1))
def test_each_misordered_pair_is_refused_and_named(lower: int) -> None:
    low, high = ORDER[lower], ORDER[lower + 1]
    limits = Limits()
    misordered = replace(limits, **{low: getattr(limits, high)})  # equal is misordered too
    with pytest.raises(LimitsError) as caught:
        check_limits(misordered)
    assert f"MIDOG_{low.upper()}" in str(caught.value)
    assert f"MIDOG_{high.upper()}" in str(caught.value)


def test_non_positive_values_are_refused() -> None:
    with pytest.raises(LimitsError, match="MIDOG_SANDBOX_TIMEOUT_S must be positive"):
        check_limits(replace(Limits(), sandbox_timeout_s=0))
    with pytest.raises(LimitsError, match="MIDOG_MAX_ATTEMPTS"):
        check_limits(replace(Limits(), max_attempts=0))


def test_limits_are_read_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from app.settings import Settings

    monkeypatch.setenv("MIDOG_SOFT_TIME_LIMIT_S", "12.5")
    monkeypatch.setenv("MIDOG_MAX_ATTEMPTS", "5")
    limits = Limits.from_settings(Settings())
    assert limits.soft_time_limit_s == 12.5
    assert limits.max_attempts == 5
    monkeypatch.setenv("MIDOG_TIME_LIMIT_S", "soon")
    with pytest.raises(ValueError, match="time_limit_s"):
        Settings()


def test_reliability_settings_reach_celery_and_both_transport_option_sets() -> None:
    from celery import Celery

    limits = Limits(visibility_timeout_s=2400.0)
    app = Celery("probe")
    configure(app, broker_url="redis://127.0.0.1:6379/0", limits=limits)
    conf = app.conf
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_serializer == "json"
    assert list(conf.accept_content) == ["json"]
    assert (conf.task_soft_time_limit, conf.task_time_limit) == (limits.soft_time_limit_s, limits.time_limit_s)
    assert conf.broker_transport_options["visibility_timeout"] == 2400.0
    assert conf.result_backend_transport_options["visibility_timeout"] == 2400.0
    assert set(conf.task_queues) == {"cpu", "gpu"}


def _worker(env_overrides: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIDOG_")}
    # A broker that is never contacted: the check must run before any connection is made.
    env.update(MIDOG_BROKER_URL="redis://127.0.0.1:1/0", **env_overrides)
    return subprocess.run(
        [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "--loglevel", "INFO", *extra],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_R4_a_worker_with_misordered_limits_refuses_to_start() -> None:
    done = _worker({"MIDOG_TIME_LIMIT_S": "3000", "MIDOG_VISIBILITY_TIMEOUT_S": "2500"})
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "refuses to start" in output
    assert "MIDOG_TIME_LIMIT_S=3000 must be below MIDOG_VISIBILITY_TIMEOUT_S=2500" in output
    assert "ready." not in output


def test_a_gpu_worker_with_several_processes_refuses_to_start() -> None:
    done = _worker({}, "-Q", "gpu", "-c", "2")
    assert done.returncode != 0
    assert "gpu-queue worker needs concurrency=1" in done.stdout + done.stderr


def test_a_worker_of_another_gpu_class_also_takes_one_job_at_a_time() -> None:
    done = _worker({}, "-Q", "gpu-a100", "-c", "2")
    assert done.returncode != 0
    assert "gpu-queue worker needs concurrency=1" in done.stdout + done.stderr


def test_R4_midog_eval_worker_refuses_misordered_limits_with_one_line() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIDOG_")}
    env.update(MIDOG_BROKER_URL="redis://127.0.0.1:1/0", MIDOG_SANDBOX_TIMEOUT_S="2000")
    done = subprocess.run(
        [sys.executable, "-c", "from app.cli import main; main()", "worker"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "midog-eval worker refuses to start: misordered time limits: MIDOG_SANDBOX_TIMEOUT_S=2000 must be below "
        "MIDOG_SOFT_TIME_LIMIT_S=1900 (required: sandbox_timeout < soft_time_limit < time_limit < "
        "visibility_timeout < lease_expiry; configured: 2000 < 1900 < 2000 < 2400 < 3000 seconds)"
    ]
