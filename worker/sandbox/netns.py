"""HTTP to a server listening on 127.0.0.1 inside a container that has no network (`--network none`).

The container's only interface is its own loopback, in its own network namespace. The worker (root, the
engine's user) reaches it without giving the container any network: a short-lived thread enters that
namespace (setns on /proc/<pid>/ns/net; it changes only the calling thread's namespace) and opens a TCP
socket there; a socket stays in the namespace it was made in, so the request itself runs from the caller.
Nothing is routed, bridged or published, and the container can still reach nothing outside.

Imports the stdlib only.
"""

from __future__ import annotations

import ctypes
import http.client
import os
import socket
import threading

CLONE_NEWNET = 0x40000000


def _socket_in(pid: int, port: int, timeout: float) -> socket.socket:
    made: list[socket.socket] = []
    failed: list[BaseException] = []

    def enter_and_connect() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns into the container's network namespace failed")
            finally:
                os.close(fd)
            conn = socket.create_connection(("127.0.0.1", port), timeout=timeout)
            made.append(conn)
        except BaseException as exc:  # handed to the caller's thread
            failed.append(exc)

    # The thread ends right after: its namespace never leaks into the worker's other work.
    thread = threading.Thread(target=enter_and_connect, daemon=True)
    thread.start()
    thread.join(timeout + 5)
    if failed:
        raise failed[0]
    if not made:
        raise TimeoutError(f"no connection to 127.0.0.1:{port} in the container within {timeout:.0f} s")
    return made[0]


def request(pid: int, method: str, path: str, *, port: int, timeout: float) -> int:
    """Send `method path` to 127.0.0.1:`port` in the network namespace of process `pid`; the status code.

    Raises OSError (refused, reset, no such process) or TimeoutError (socket.timeout) like a plain client.
    """
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.sock = _socket_in(pid, port, timeout)
    try:
        conn.request(method, path, body=b"" if method == "POST" else None)
        response = conn.getresponse()
        response.read(65536)
        return response.status
    finally:
        conn.close()
