"""Checks of uploads off the request path: a bounded number of child processes, each with its own memory and
CPU limits, awaited without holding a thread or the event loop.

- A predictions file of at most `inline_check_bytes` is checked here, in the API's thread pool: its cost is
  bounded by its size and a child would cost more than the check.
- Larger predictions files, model archives, container images and model tarballs go to
  `python -m app.submissions.checks`: at most `check_processes` at once (others wait their turn, the rest
  of the API carries on), each limited to `check_memory_bytes` of address space and `check_cpu_seconds` of
  CPU, and killed after twice that in wall time. A child that runs out of either is a refusal (422 saying
  which budget), never a crash of the API.
Must not import the worker's heavy modules itself: they load in the child (or lazily, inline).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool

from app.settings import Settings, child_environment
from app.submissions.checks import (
    MEMORY_MESSAGE,
    CaseExtent,
    CheckFailedError,
    check_classifications,
    check_predictions,
)

CPU_MESSAGE = "could not be checked within the server's CPU budget of {seconds} s; simplify or recompress the file"
_CHILD_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "PYTHONPATH", "TMPDIR")


class Checker:
    """Reads its budgets from `settings` at each check (they may be changed while the server runs)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._slots = asyncio.Semaphore(settings.check_processes)

    @property
    def memory_bytes(self) -> int:
        return self.settings.check_memory_bytes

    @property
    def cpu_seconds(self) -> int:
        return self.settings.check_cpu_seconds

    async def predictions(
        self,
        path: Path,
        *,
        cases: Mapping[str, CaseExtent],
        max_points_per_case: int,
        max_total_points: int,
        display_name: str,
        rules: str = "midog2022",
    ) -> dict[str, int]:
        """The predictions check (app.submissions.checks.check_predictions); CheckFailedError when refused."""
        if path.stat().st_size <= self.settings.inline_check_bytes:
            return await run_in_threadpool(
                check_predictions,
                path,
                cases=cases,
                max_points_per_case=max_points_per_case,
                max_total_points=max_total_points,
                display_name=display_name,
                stream=False,
                rules=rules,
            )
        request = {
            "kind": "predictions",
            "path": str(path),
            "cases": {name: list(asdict(extent).values()) for name, extent in cases.items()},
            "max_points_per_case": max_points_per_case,
            "max_total_points": max_total_points,
            "display_name": display_name,
            "rules": rules,
        }
        summary: dict[str, int] = (await self._in_child(request))["summary"]
        return summary

    async def classifications(self, path: Path, *, patches: Mapping[str, int], display_name: str) -> dict[str, int]:
        """A classification predictions file (app.submissions.checks.check_classifications), in the API when
        small, else in a child process; CheckFailedError when refused."""
        if path.stat().st_size <= self.settings.inline_check_bytes:
            return await run_in_threadpool(check_classifications, path, patches=patches, display_name=display_name)
        request = {"kind": "classifications", "path": str(path), "patches": dict(patches), "display_name": display_name}
        summary: dict[str, int] = (await self._in_child(request))["summary"]
        return summary

    async def archive(self, kind: str, path: Path, *, task: str | None = None) -> None:
        """A model archive or container image (app.submissions.checks.check_archive), for a phase of `task` when
        given; CheckFailedError when refused."""
        request = {"kind": kind, "path": str(path), "max_bytes": self.settings.max_upload_bytes(kind), "task": task}
        await self._in_child(request)

    async def model_tarball(self, path: Path) -> dict[str, Any]:
        """A container submission's model tarball (app.submissions.checks.check_model_tarball), in a child
        process; {"files", "bytes", "sha256"}, or CheckFailedError when refused."""
        request = {
            "kind": "model_tarball",
            "path": str(path),
            "max_bytes": self.settings.max_model_tarball_bytes,
            "max_files": self.settings.max_model_tarball_files,
        }
        summary: dict[str, Any] = (await self._in_child(request))["summary"]
        return summary

    async def _in_child(self, request: dict[str, Any]) -> dict[str, Any]:
        request = {**request, "memory_bytes": self.memory_bytes, "cpu_seconds": self.cpu_seconds}
        env = child_environment(keep=_CHILD_ENV)
        # One thread each for numpy's libraries: fewer threads, less address space reserved.
        env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
        async with self._slots:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "app.submissions.checks",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                start_new_session=True,
            )
            try:
                out, err = await asyncio.wait_for(
                    process.communicate(json.dumps(request).encode()), timeout=2 * self.cpu_seconds + 10
                )
            except TimeoutError:
                _kill(process.pid)
                await process.wait()
                raise CheckFailedError(CPU_MESSAGE.format(seconds=self.cpu_seconds)) from None
            finally:
                if process.returncode is None:
                    _kill(process.pid)
                    await process.wait()
        code = process.returncode
        if code in (-signal.SIGXCPU, -signal.SIGKILL):
            raise CheckFailedError(CPU_MESSAGE.format(seconds=self.cpu_seconds))
        try:
            reply: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
        except (ValueError, IndexError):
            if b"MemoryError" in err:
                raise CheckFailedError(MEMORY_MESSAGE.format(mib=self.memory_bytes // 2**20)) from None
            raise RuntimeError(f"the upload check ended with status {code}: {err.decode()[-500:]}") from None
        if not reply.get("ok"):
            raise CheckFailedError(str(reply.get("error") or "refused"))
        return reply


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
