"""LeaseKeeper: renews while participant code runs, and stops the run as soon as the lease is lost."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from worker.lease import INTERRUPT, LeaseKeeper, LeaseLostError
from worker.runners import run_bounded


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_the_lease_is_renewed_at_the_interval_while_the_run_goes_on() -> None:
    calls: list[float] = []

    def renew() -> bool:
        calls.append(time.monotonic())
        return True

    with LeaseKeeper(renew, interval_s=0.1, what="run"):
        time.sleep(0.55)
    assert 4 <= len(calls) <= 6


def test_a_lost_lease_stops_a_sleeping_child_within_the_interval(tmp_path: Path) -> None:
    """The run blocks in participant code (a child process that sleeps); the keeper learns the row was cancelled,
    interrupts the run as a time limit does, and the child is killed with its process group."""
    pid_file = tmp_path / "pid"
    code = f"import os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\ntime.sleep(600)"
    answers = iter([True, True, False])
    started = time.monotonic()
    keeper = LeaseKeeper(lambda: next(answers), interval_s=0.5, what="evaluation 7")
    with pytest.raises(LeaseLostError, match="evaluation 7 no longer holds its lease"), keeper:
        run_bounded([sys.executable, "-c", code], timeout_s=600)
    assert time.monotonic() - started < 3.0
    child = int(pid_file.read_text())
    assert not _alive(child)


def test_an_unknown_answer_lets_the_run_go_on() -> None:
    """While the database is away the run continues: its lease lasts longer than a restart."""
    with LeaseKeeper(lambda: None, interval_s=0.05, what="run"):
        time.sleep(0.3)


def test_off_the_main_thread_the_run_stops_when_the_keeper_exits() -> None:
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            with LeaseKeeper(lambda: False, interval_s=0.05, what="run"):
                time.sleep(0.3)
            outcome.append(None)
        except LeaseLostError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert isinstance(outcome[0], LeaseLostError)


def test_a_late_interrupt_never_ends_the_process() -> None:
    previous = signal.getsignal(INTERRUPT)
    try:
        signal.signal(INTERRUPT, signal.SIG_DFL)
        with LeaseKeeper(lambda: True, interval_s=10, what="run"):
            pass
        os.kill(os.getpid(), INTERRUPT)  # as if the keeper's signal arrived after the run ended
        time.sleep(0.05)
    finally:
        signal.signal(INTERRUPT, previous)
