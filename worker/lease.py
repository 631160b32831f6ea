"""Keeping a run's lease while participant code runs, and stopping the run as soon as the lease is lost.

A runner blocks while its sandbox runs (minutes to hours) and calls nothing back, so nothing would notice an
organiser's cancel, and a long run could outlive its lease. `LeaseKeeper` renews the lease from a helper
thread every `interval_s`. When a renewal finds the row cancelled or taken over by another run, it interrupts
the running thread with `LeaseLostError`, delivered by a signal exactly as Celery delivers its soft time
limit: runners already clean up on that path (the sandbox killed, containers and images removed), so a
cancelled run stops within one interval plus the time its cleanup takes.

Only the main thread can receive a signal; a keeper entered from another thread still renews, and raises
LeaseLostError when it exits. While the database is unreachable a renewal says nothing (None) and the run
goes on: the lease is long enough to ride out a restart.

Imports the standard library only.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any

logger = logging.getLogger(__name__)

# SIGUSR1 carries Celery's soft time limit; SIGUSR2 is free in the pool's child processes.
INTERRUPT = signal.SIGUSR2


class LeaseLostError(Exception):
    """The row was cancelled, or its lease expired and another run took it: this run stops, writing nothing."""


class LeaseKeeper:
    """`with LeaseKeeper(renew, interval_s=2, what="evaluation 7"):` around the blocking part of a run.

    `renew()` extends the lease and says whether it is still held (True), lost (False) or unknown (None).
    """

    def __init__(self, renew: Callable[[], bool | None], *, interval_s: float, what: str) -> None:
        self.renew = renew
        self.interval_s = interval_s
        self.what = what
        self.lost = False
        self._stop = threading.Event()
        self._armed = False
        self._interruptible = False
        self._previous: Any = None
        self._thread = threading.Thread(target=self._keep, name=f"lease of {what}", daemon=True)

    def __enter__(self) -> LeaseKeeper:
        self._interruptible = threading.current_thread() is threading.main_thread()
        if self._interruptible:
            self._previous = signal.signal(INTERRUPT, self._interrupt)
        self._armed = True
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._armed = False
        self._stop.set()
        self._thread.join()
        if self._interruptible:
            # A signal still on its way must not take the default action (ending the process).
            keep = self._previous not in (None, signal.SIG_DFL)
            signal.signal(INTERRUPT, self._previous if keep else signal.SIG_IGN)
        if self.lost and kind is None:
            raise LeaseLostError(f"{self.what} no longer holds its lease")

    def _interrupt(self, _signum: int, _frame: FrameType | None) -> None:
        if self._armed:
            self._armed = False
            raise LeaseLostError(f"{self.what} no longer holds its lease")

    def _keep(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                held = self.renew()
            except Exception:  # a bug in the renewal must not end the run; the next tick tries again
                logger.exception("%s: lease not renewed", self.what)
                continue
            if held is False:
                self.lost = True
                logger.info("%s: lease lost (cancelled or taken over); stopping the run", self.what)
                if self._interruptible and self._armed:
                    os.kill(os.getpid(), INTERRUPT)
                return
