"""Container health checks of docker-compose.yml: `python docker/healthcheck.py api|worker NAME|beat|sandbox`.

api: GET /api/v1/health answers 200 (MIDOG_HEALTHCHECK_URL overrides the URL).
worker: the Celery node NAME answers a ping through the broker.
beat: the beat schedule file was written recently (beat rewrites it while it runs its schedule).
sandbox: the sandbox runner's socket accepts a connection (MIDOG_SANDBOX_RUNNER_SOCKET overrides the path).
Exit status 0 means healthy. Standard library plus what the image already has.
"""

from __future__ import annotations

import os
import socket
import sys
import time
import urllib.request
from pathlib import Path


def api(url: str = "http://127.0.0.1:8000/api/v1/health") -> bool:
    url = os.environ.get("MIDOG_HEALTHCHECK_URL", url)
    with urllib.request.urlopen(url, timeout=5) as response:
        return bool(response.status == 200)


def worker(name: str) -> bool:
    from worker.celery_app import app

    node = name.replace("%h", socket.gethostname())
    replies = app.control.ping(destination=[node], timeout=5.0)
    return any(node in reply for reply in replies)


def beat(schedule: Path, max_age_s: float = 600.0) -> bool:
    files = list(schedule.parent.glob(schedule.name + "*"))
    return bool(files) and time.time() - max(f.stat().st_mtime for f in files) < max_age_s


def sandbox(path: str = "/run/midog-runner/runner.sock") -> bool:
    path = os.environ.get("MIDOG_SANDBOX_RUNNER_SOCKET", path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(5)
        conn.connect(path)
    return True


def main(argv: list[str]) -> int:
    kind = argv[1] if len(argv) > 1 else ""
    try:
        if kind == "api":
            ok = api()
        elif kind == "worker" and len(argv) > 2:
            ok = worker(argv[2])
        elif kind == "sandbox":
            ok = sandbox()
        elif kind == "beat":
            ok = beat(Path(os.environ.get("MIDOG_DATA_DIR", "/data")) / "celerybeat-schedule")
        else:
            print(__doc__, file=sys.stderr)
            return 2
    except Exception as exc:
        print(f"unhealthy: {exc.__class__.__name__}: {exc}", file=sys.stderr)
        return 1
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
