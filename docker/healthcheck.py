"""Container health checks of the compose files: `python docker/healthcheck.py api|worker NAME|beat|sandbox|gpu-host
CACHE_DIR`.

api: GET /api/v1/health answers 200 (the setting MIDOG_HEALTHCHECK_URL names the URL).
worker: the Celery node NAME answers a ping through the broker.
beat: the beat schedule file was written recently (beat rewrites it while it runs its schedule).
gpu-host: the GPU host's last heartbeat that the API took is recent (`<CACHE_DIR>/heartbeat`, touched by it).
sandbox: the sandbox runner's socket accepts a connection (MIDOG_SANDBOX_RUNNER_SOCKET, else the default path).
Exit status 0 means healthy. Settings come from app.settings, as everywhere; nothing beyond the image.
"""

from __future__ import annotations

import socket
import sys
import time
import urllib.request
from pathlib import Path


def api(url: str) -> bool:
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


def sandbox(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(5)
        conn.connect(path)
    return True


def main(argv: list[str]) -> int:
    from app.cli.runner import DEFAULT_SOCKET
    from app.settings import get_settings

    settings = get_settings()
    kind = argv[1] if len(argv) > 1 else ""
    try:
        if kind == "api":
            ok = api(settings.healthcheck_url)
        elif kind == "worker" and len(argv) > 2:
            ok = worker(argv[2])
        elif kind == "gpu-host" and len(argv) > 2:
            ok = beat(Path(argv[2]) / "heartbeat", max_age_s=300.0)
        elif kind == "sandbox":
            ok = sandbox(settings.sandbox_runner_socket or DEFAULT_SOCKET)
        elif kind == "beat":
            ok = beat(settings.data_dir / "celerybeat-schedule")
        else:
            print(__doc__, file=sys.stderr)
            return 2
    except Exception as exc:
        print(f"unhealthy: {exc.__class__.__name__}: {exc}", file=sys.stderr)
        return 1
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
