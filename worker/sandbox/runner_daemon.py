"""The sandbox runner service: the one privileged process, which runs sandboxes for unprivileged workers.

In production the gpu worker runs as an ordinary user without capabilities or a container-engine socket:
it takes jobs, unpacks and validates uploads, and prepares run directories. Running participant code needs
privileges (cgroups, mount namespaces, the GPU), so the worker asks this service, over a Unix socket, with
a minimal interface: one JSON request per connection, one JSON reply.

    {"op": "problem", "backend": NAME}                      -> {"problem": str | null}
    {"op": "run", "backend": NAME, "spec": {...}, "argv": [...], "output_dir": PATH}
                                                            -> {"result": {...}} | {"error": str, "kind": str}
    {"op": "reap", "backend": NAME, "label": LABEL}         -> {"reaped": int}
    {"op": "leftover_labels", "backend": NAME}              -> {"labels": [...]}
    {"op": "load_image", "backend": NAME, "path": PATH, "image_id": HEX, "repo_tags": [...]}
                                                            -> {"image_id": HEX} | {"error": ..., "kind": ...}
    {"op": "remove_image", "backend": NAME, "image_id": HEX} -> {}

Rules it enforces whatever the worker asks:
- only peers whose uid is in `allowed_uids` (SO_PEERCRED) are served;
- every path (mount sources, output directory, image archive) must resolve inside `allowed_roots` (the data
  and test-set directories) or the service's own Python runtime (the interpreter, environment and worker
  package that model runs mount); the spec itself keeps its rules (non-root uid, no network, limits), and
  its uid may not be a worker's (participant code never runs as the worker that prepared its inputs);
- a run executes in a child process of its own; when the worker's connection closes (the worker died or
  gave up) before the reply, that child and everything it started is killed;
- what a run writes to its output directory is handed to the peer's uid.

Imports the stdlib and worker.sandbox (and worker.containers for image loading) only.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from worker.sandbox import Backend, SandboxError, get_backend
from worker.sandbox.isolation import IsolationError
from worker.sandbox.runtime import python_runtime
from worker.sandbox.spec import SandboxSpec
from worker.sandbox.wire import result_to_dict, spec_from_dict, spec_to_dict

MAX_REQUEST_BYTES = 1 << 20
_ENTRY = [sys.executable, "-m", "worker.sandbox.runner_daemon", "run-one"]


class RefusedError(ValueError):
    """The request breaks a rule of the service; nothing was run."""


def _inside(path: Path, roots: Iterable[Path]) -> bool:
    resolved = Path(os.path.realpath(path))
    return any(resolved == root or root in resolved.parents for root in roots)


def _peer(conn: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a Unix socket."""
    raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return pid, uid, gid


def _read_request(conn: socket.socket) -> dict[str, Any]:
    buffer = b""
    while not buffer.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk:
            break
        buffer += chunk
        if len(buffer) > MAX_REQUEST_BYTES:
            raise RefusedError("request too large")
    request = json.loads(buffer or b"{}")
    if not isinstance(request, dict):
        raise RefusedError("a request is a JSON object")
    return request


def _hand_over(root: Path, uid: int, gid: int) -> None:
    """The run's output belongs to the worker that asked for it (links are changed, never followed)."""
    for path in [root, *root.rglob("*")]:
        with contextlib.suppress(FileNotFoundError):
            os.chown(path, uid, gid, follow_symlinks=False)


class RunnerService:
    def __init__(
        self,
        socket_path: Path,
        *,
        allowed_roots: Sequence[Path],
        allowed_uids: Sequence[int],
        runtime_dir: Path | None = None,
        backends: Sequence[str] = ("bwrap", "podman"),
        allowed_missing: frozenset[str] = frozenset(),
        child_env: Mapping[str, str] | None = None,
    ) -> None:
        """`allowed_missing`: isolation controls bwrap may run without (the deployment's settings);
        `child_env`: variables passed to each run's child beside PATH (PYTHONPATH, LANG, CUDA_VISIBLE_DEVICES)."""
        self.socket_path = socket_path
        self.allowed_missing = allowed_missing
        self.child_env = dict(child_env or {})
        own_runtime = [m.source for m in python_runtime(("worker",))[0]]
        self.allowed_roots = [Path(os.path.realpath(r)) for r in [*allowed_roots, *own_runtime, Path("/usr")]]
        self.data_roots = [Path(os.path.realpath(r)) for r in allowed_roots]
        self.allowed_uids = set(allowed_uids)
        self.runtime_dir = runtime_dir
        self.backend_names = tuple(backends)
        self._stop = threading.Event()

    def backend(self, name: Any) -> Backend:
        if name not in self.backend_names:
            raise RefusedError(f"backend {name!r} is not offered here (offered: {', '.join(self.backend_names)})")
        return get_backend(str(name), runtime_dir=self.runtime_dir, allowed_missing=self.allowed_missing)

    def serve_forever(self) -> None:
        """Listen on the socket (replaced if left by a dead service) until stopped. The socket is 0660 and
        belongs to the group of the first worker uid (by convention uid and gid agree), so only root and the
        workers can connect; the peer check refuses anybody else who might."""
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(self.socket_path))
        os.chmod(self.socket_path, 0o660)
        group = next((uid for uid in sorted(self.allowed_uids) if uid != 0), 0)
        os.chown(self.socket_path, 0, group)
        self.socket_path.parent.chmod(0o755)
        server.listen(16)
        server.settimeout(0.5)
        try:
            while not self._stop.is_set():
                try:
                    conn, _ = server.accept()
                except TimeoutError:
                    continue
                threading.Thread(target=self._serve_one, args=(conn,), daemon=True).start()
        finally:
            server.close()

    def stop(self) -> None:
        self._stop.set()

    def _serve_one(self, conn: socket.socket) -> None:
        with conn:
            try:
                _, uid, gid = _peer(conn)
                if uid not in self.allowed_uids:
                    raise RefusedError(f"uid {uid} may not use the sandbox runner")
                request = _read_request(conn)
                reply = self.handle(request, conn=conn, peer=(uid, gid))
            except RefusedError as exc:
                reply = {"error": str(exc), "kind": "refused"}
            except SandboxError as exc:
                reply = {"error": str(exc), "kind": "sandbox"}
            except (ValueError, KeyError, TypeError) as exc:
                reply = {"error": f"bad request: {exc}", "kind": "refused"}
            if reply is not None:
                with contextlib.suppress(OSError):
                    conn.sendall(json.dumps(reply).encode() + b"\n")

    def handle(
        self, request: Mapping[str, Any], *, conn: socket.socket, peer: tuple[int, int]
    ) -> dict[str, Any] | None:
        op = request.get("op")
        if op == "problem":
            return {"problem": self.backend(request.get("backend")).problem()}
        if op == "reap":
            return {"reaped": self.backend(request.get("backend")).reap(str(request["label"]))}
        if op == "leftover_labels":
            return {"labels": self.backend(request.get("backend")).leftover_labels()}
        if op == "run":
            return self._run(request, conn=conn, peer=peer)
        if op in ("load_image", "remove_image"):
            return self._image(request)
        raise RefusedError(f"unknown operation {op!r}")

    def _check_paths(self, spec: SandboxSpec, output_dir: Path) -> None:
        for mount in spec.mounts:
            if not _inside(mount.source, self.allowed_roots):
                raise RefusedError(f"mount source {mount.source} lies outside what this runner may mount")
        if not _inside(output_dir.parent, self.data_roots):
            raise RefusedError(f"output directory {output_dir} lies outside the data directories")

    def _run(self, request: Mapping[str, Any], *, conn: socket.socket, peer: tuple[int, int]) -> dict[str, Any] | None:
        self.backend(request.get("backend"))
        spec = spec_from_dict(request["spec"])
        if spec.uid in self.allowed_uids or spec.uid == peer[0]:
            raise RefusedError(f"participant code may not run as the worker's own uid {spec.uid}")
        output_dir = Path(str(request["output_dir"]))
        self._check_paths(spec, output_dir)
        child = subprocess.Popen(
            _ENTRY,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", **self.child_env},
        )
        assert child.stdin is not None
        assert child.stdout is not None
        job = {"backend": request["backend"], "spec": spec_to_dict(spec), "argv": list(request["argv"])}
        job |= {"output_dir": str(output_dir), "runtime_dir": str(self.runtime_dir) if self.runtime_dir else None}
        job |= {"allowed_missing": sorted(self.allowed_missing)}
        child.stdin.write(json.dumps(job).encode())
        child.stdin.close()
        # Wait for the child's reply or the worker's hang-up, whichever comes first.
        out_fd, conn_fd = child.stdout.fileno(), conn.fileno()
        ready, _, _ = select.select([out_fd, conn_fd], [], [])
        if conn_fd in ready and out_fd not in ready:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            child.wait()
            return None
        reply: dict[str, Any] = json.loads(child.stdout.read() or b'{"error": "the run ended without a reply"}')
        child.wait()
        if "result" in reply and output_dir.exists():
            _hand_over(output_dir, *peer)
        return reply

    def _image(self, request: Mapping[str, Any]) -> dict[str, Any]:
        backend = self.backend(request.get("backend"))
        executable = getattr(backend, "executable", None)
        if executable is None:
            raise RefusedError(f"backend {request.get('backend')!r} holds no images")
        from worker.containers.engine import remove_image

        if request["op"] == "remove_image":
            remove_image(str(request["image_id"]), executable=executable)
            return {}
        from worker.containers.engine import load_image
        from worker.containers.image_archive import ImageArchiveError

        path = Path(str(request["path"]))
        if not _inside(path, self.data_roots):
            raise RefusedError(f"image archive {path} lies outside the data directories")
        # The unprivileged worker validated the archive; this service never parses uploads itself. The engine
        # loads it through its docker-archive transport, which reads only the image the manifest names.
        image_id = str(request["image_id"])
        if not re.fullmatch(r"[0-9a-f]{64}", image_id):
            raise RefusedError("image_id must be a sha256 hex digest")
        archive = SimpleNamespace(image_id=image_id, repo_tags=[str(t) for t in request.get("repo_tags", [])])
        try:
            return {"image_id": load_image(path, archive, executable=executable)}  # type: ignore[arg-type]
        except ImageArchiveError as exc:
            return {"error": str(exc), "kind": "submission"}


def run_one() -> None:
    """The child of one run: execute it with the local backend and print the reply."""
    from worker.process_tree import die_with_parent

    die_with_parent()
    job = json.loads(sys.stdin.buffer.read())
    runtime = Path(job["runtime_dir"]) if job.get("runtime_dir") else None
    try:
        allowed = frozenset(str(c) for c in job.get("allowed_missing", []))
        backend = get_backend(str(job["backend"]), runtime_dir=runtime, allowed_missing=allowed)
        result = backend.run(spec_from_dict(job["spec"]), job["argv"], output_dir=Path(job["output_dir"]))
        reply: dict[str, Any] = {"result": result_to_dict(result)}
    except IsolationError as exc:
        reply = {"error": str(exc), "kind": "isolation"}
    except SandboxError as exc:
        reply = {"error": str(exc), "kind": "sandbox"}
    except Exception as exc:  # a bug: the worker records it
        reply = {"error": f"{exc.__class__.__name__}: {exc}", "kind": "infrastructure"}
    sys.stdout.write(json.dumps(reply))


if __name__ == "__main__" and sys.argv[1:] == ["run-one"]:
    run_one()
