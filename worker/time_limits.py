"""The worker's time limits, their defaults and the check that they nest: standard library only.

The one source of these defaults: app.settings declares its `MIDOG_SANDBOX_TIMEOUT_S` ... fields with the
values of `Limits()`, and worker.celery_app builds its `Limits` from the settings. The limits must nest
(docs/reliability-security.md, Time limits): sandbox timeout < soft limit < hard limit < broker visibility
timeout < stale-lease expiry, or the worker refuses to start (`check_limits`). Imports nothing of app/ or
Celery, so that app.settings can read the defaults without pulling in the worker.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, fields
from typing import Any


class LimitsError(ValueError):
    """The time limits are misordered or not positive; the message says which pair and how to fix it."""


@dataclass(frozen=True)
class Limits:
    """Seconds; the defaults suit a MIDOG-sized GPU run. Built from the process's settings (`from_settings`)."""

    sandbox_timeout_s: float = 1800.0
    soft_time_limit_s: float = 1900.0
    time_limit_s: float = 2000.0
    visibility_timeout_s: float = 2400.0
    lease_expiry_s: float = 3000.0
    # A job that crashed its worker this many times ends `failed` (a poison job must not loop forever).
    max_attempts: int = 3
    # A run renews its lease this often while participant code runs (worker.lease); a cancel stops it as fast.
    lease_heartbeat_s: float = 2.0
    # The reconciler: how often it runs, and how long a `queued` row may wait with no message seen for it.
    reconcile_interval_s: float = 60.0
    requeue_after_s: float = 120.0

    @classmethod
    def from_settings(cls, settings: Any) -> Limits:
        """The limits of an app.settings.Settings (every field of this class is one of its fields)."""
        return cls(**{field.name: getattr(settings, field.name) for field in fields(cls)})


_ORDER = (
    "sandbox_timeout_s",
    "soft_time_limit_s",
    "time_limit_s",
    "visibility_timeout_s",
    "lease_expiry_s",
)


def check_limits(limits: Limits) -> None:
    """Raise LimitsError unless sandbox timeout < soft < hard < visibility timeout < lease expiry."""
    for name in (*_ORDER, "reconcile_interval_s", "requeue_after_s", "lease_heartbeat_s"):
        if getattr(limits, name) <= 0:
            raise LimitsError(f"MIDOG_{name.upper()} must be positive, got {getattr(limits, name)}")
    if limits.max_attempts < 1:
        raise LimitsError(f"MIDOG_MAX_ATTEMPTS must be at least 1, got {limits.max_attempts}")
    if limits.lease_heartbeat_s * 2 > limits.lease_expiry_s:
        raise LimitsError(
            f"MIDOG_LEASE_HEARTBEAT_S={limits.lease_heartbeat_s:g} must be at most half of "
            f"MIDOG_LEASE_EXPIRY_S={limits.lease_expiry_s:g}, or a running job could lose its lease between renewals"
        )
    for lower, upper in itertools.pairwise(_ORDER):
        low, high = getattr(limits, lower), getattr(limits, upper)
        if not low < high:
            names = " < ".join(n.removesuffix("_s") for n in _ORDER)
            values = " < ".join(f"{getattr(limits, n):g}" for n in _ORDER)
            raise LimitsError(
                f"misordered time limits: MIDOG_{lower.upper()}={low:g} must be below "
                f"MIDOG_{upper.upper()}={high:g} (required: {names}; configured: {values} seconds)"
            )
