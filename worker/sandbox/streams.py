"""Bounded readers for a sandboxed process's stdout and stderr: only the last N bytes are kept.

A participant printing gigabytes must neither fill the worker's memory nor block on a full pipe, so each
stream is drained by a thread into a fixed-size tail. Imports the stdlib only.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import IO


class TailReader:
    """Drains a binary pipe in a thread, keeping its last `limit` bytes."""

    def __init__(self, stream: IO[bytes] | None, limit: int) -> None:
        self._limit = limit
        self._buffer = bytearray()
        self._thread: threading.Thread | None = None
        if stream is not None:
            self._thread = threading.Thread(target=self._drain, args=(stream,), daemon=True)
            self._thread.start()

    def _drain(self, stream: IO[bytes]) -> None:
        try:
            while chunk := stream.read1(65536) if hasattr(stream, "read1") else stream.read(65536):
                self._buffer += chunk
                if len(self._buffer) > 2 * self._limit:
                    del self._buffer[: len(self._buffer) - self._limit]
        except (OSError, ValueError):
            pass
        finally:
            stream.close()

    def text(self, timeout: float = 5.0) -> str:
        """The kept tail, decoded leniently, once the stream has ended (or after `timeout`)."""
        if self._thread is not None:
            self._thread.join(timeout)
        return bytes(self._buffer[-self._limit :]).decode("utf-8", errors="replace")


class LineLog:
    """Drains a binary pipe in a thread into its last `max_lines` lines, numbered from the start.

    `mark()` is the number of lines seen so far; `since(mark)` the lines after it that are still kept,
    so a long-running process's log can be cut into the part written during each request.
    """

    def __init__(self, stream: IO[bytes] | None, max_lines: int, max_line_bytes: int = 4096) -> None:
        self._lines: collections.deque[str] = collections.deque(maxlen=max_lines)
        self._count = 0
        self._lock = threading.Lock()
        self._max_line_bytes = max_line_bytes
        self._thread: threading.Thread | None = None
        if stream is not None:
            self._thread = threading.Thread(target=self._drain, args=(stream,), daemon=True)
            self._thread.start()

    def _drain(self, stream: IO[bytes]) -> None:
        try:
            # Bounded reads: a line without end must not fill the worker's memory (it is cut into pieces).
            while raw := stream.readline(self._max_line_bytes):
                line = raw.decode("utf-8", errors="replace").rstrip("\n")
                with self._lock:
                    self._lines.append(line)
                    self._count += 1
        except (OSError, ValueError):
            pass
        finally:
            stream.close()

    def mark(self) -> int:
        with self._lock:
            return self._count

    def since(self, mark: int, until: int | None = None) -> list[str]:
        """The kept lines numbered from `mark` up to `until` (exclusive; None: all so far)."""
        with self._lock:
            kept_from = self._count - len(self._lines)
            end = len(self._lines) if until is None else max(until - kept_from, 0)
            return list(self._lines)[max(mark - kept_from, 0) : end]

    def settle(self, quiet: float = 0.1, limit: float = 1.0) -> None:
        """Wait until no line has arrived for `quiet` seconds (at most `limit`): lines written just before a
        reply pass through the engine's attach and the pipe a moment after it."""
        deadline = time.monotonic() + limit
        seen = self.mark()
        while time.monotonic() < deadline:
            time.sleep(quiet)
            now = self.mark()
            if now == seen:
                return
            seen = now

    def wait(self, timeout: float = 5.0) -> None:
        if self._thread is not None:
            self._thread.join(timeout)
