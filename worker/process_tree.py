"""Processes that die with their parent: the parent-death signal (Linux `PR_SET_PDEATHSIG`).

`serve` starts its workers, a worker its pool children and beat, a pool child the sandbox's namespace
helper; each of them arms this signal at start, so that a SIGKILL anywhere up the tree takes everything
below it down at once, and nothing is left running to be duplicated by the next start. The signal fires
when the *thread* that started the process ends, so parents start children from a thread that lives as
long as they do. Imports the stdlib only.
"""

from __future__ import annotations

import ctypes
import os
import signal

_PR_SET_PDEATHSIG = 1


def die_with_parent(expected_parent: int | None = None, sig: int = signal.SIGKILL) -> None:
    """Ask the kernel for `sig` when the parent dies; exit at once if it already died (or is not
    `expected_parent`): the signal only covers a parent that is still alive when it is armed."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    parent = os.getppid()
    if parent == 1 or (expected_parent is not None and parent != expected_parent):
        os._exit(1)
