"""A sandbox backend that asks the runner service (worker.sandbox.runner_daemon) to do the privileged part.

Used by unprivileged gpu workers when MIDOG_SANDBOX_RUNNER_SOCKET names the service's socket: the worker
prepares the run's directories, the service runs the sandbox and hands the output back. Each call is one
connection; closing it before the reply (the worker dies, or its time limit interrupts it) makes the
service kill the run. Faults of the service itself are SandboxError (retried as infrastructure).

Imports the stdlib and worker.sandbox only.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from worker.sandbox.isolation import IsolationError
from worker.sandbox.spec import SandboxError, SandboxResult, SandboxSpec
from worker.sandbox.wire import result_from_dict, spec_to_dict

SOCKET_VARIABLE = "MIDOG_SANDBOX_RUNNER_SOCKET"


class RemoteBackend:
    """The backend `name` of the runner service at `socket_path`."""

    def __init__(self, name: str, socket_path: Path) -> None:
        self.name = name
        self.socket_path = socket_path
        # Container runners ask for the engine by name; the images live in the service's engine.
        self.executable = name

    def _call(self, request: dict[str, Any], *, timeout: float | None = 60.0) -> dict[str, Any]:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                conn.settimeout(timeout)
                conn.connect(str(self.socket_path))
                conn.sendall(json.dumps({**request, "backend": self.name}).encode() + b"\n")
                buffer = b""
                while not buffer.endswith(b"\n"):
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    buffer += chunk
        except OSError as exc:
            raise SandboxError(f"the sandbox runner at {self.socket_path} did not answer: {exc}") from exc
        if not buffer:
            raise SandboxError("the sandbox runner closed the connection without a reply")
        reply: dict[str, Any] = json.loads(buffer)
        if "error" in reply:
            if reply.get("kind") == "isolation":
                raise IsolationError(str(reply["error"]))
            if reply.get("kind") == "submission":
                from worker.containers.image_archive import ImageArchiveError

                raise ImageArchiveError(str(reply["error"]))
            raise SandboxError(f"the sandbox runner: {reply['error']}")
        return reply

    def check(self) -> None:
        if not self.socket_path.exists():
            raise SandboxError(f"no sandbox runner socket at {self.socket_path} (start `midog-eval sandbox-runner`)")

    def problem(self) -> str | None:
        try:
            self.check()
            problem = self._call({"op": "problem"})["problem"]
        except SandboxError as exc:
            return str(exc)
        return None if problem is None else str(problem)

    def run(self, spec: SandboxSpec, argv: Sequence[str], *, output_dir: Path) -> SandboxResult:
        request = {"op": "run", "spec": spec_to_dict(spec), "argv": list(argv), "output_dir": str(output_dir)}
        # No timeout of our own: the spec's wall clock bounds the run inside the service.
        reply = self._call(request, timeout=spec.wall_seconds + 120)
        return result_from_dict(reply["result"])

    def reap(self, label: str) -> int:
        return int(self._call({"op": "reap", "label": label})["reaped"])

    def leftover_labels(self) -> list[str]:
        return [str(label) for label in self._call({"op": "leftover_labels"})["labels"]]

    def load_image(self, path: Path, archive: Any) -> str:
        request = {"op": "load_image", "path": str(path), "image_id": archive.image_id}
        request["repo_tags"] = list(archive.repo_tags)
        return str(self._call(request, timeout=1900)["image_id"])

    def remove_image(self, image_id: str) -> None:
        self._call({"op": "remove_image", "image_id": image_id}, timeout=300)
