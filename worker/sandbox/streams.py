"""Bounded readers for a sandboxed process's stdout and stderr: only the last N bytes are kept.

A participant printing gigabytes must neither fill the worker's memory nor block on a full pipe, so each
stream is drained by a thread into a fixed-size tail. Imports the stdlib only.
"""

from __future__ import annotations

import threading
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
