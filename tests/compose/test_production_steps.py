"""The README's "Production with docker compose" steps, followed as far as a machine without a Docker engine
allows: the compose file is validated with the same `.env` flow, then the services' own commands (taken from
`docker-compose config`, not retyped) run against the local PostgreSQL and Redis, their health checks must
pass, and every `midog-eval`/`curl` line of the README runs as written (host, port and paths substituted). A
participant then submits with the CLI and the entry reaches the leaderboard page.

In CI a missing PostgreSQL, Redis or docker-compose is a failure (tests/conftest.py, compose_helpers).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))

from compose_helpers import REPO_ROOT, compose_binary, in_ci, project_copy

from app.cli import demo

BIN = Path(sys.executable).parent
# A Redis database of its own (no key prefix: the services here are configured like compose's, which sets none).
REDIS_URL = os.environ.get("MIDOG_TEST_REDIS_URL", "redis://127.0.0.1:6379/0").rsplit("/", 1)[0] + "/13"


def readme_steps() -> list[str]:
    text = (REPO_ROOT / "README.md").read_text()
    match = re.search(r"<!-- production-steps[^>]*-->\s*```bash\n(.*?)```\s*<!-- /production-steps -->", text, re.S)
    assert match, "README has no production-steps block"
    return [line.split("  #")[0].strip() for line in match.group(1).splitlines() if line.strip()]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _require_redis() -> None:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).flushdb()
    except Exception as exc:
        if in_ci():
            pytest.fail(f"Redis at {REDIS_URL} is unreachable: {exc} (CI requires it)")
        pytest.skip(f"Redis at {REDIS_URL} is unreachable: {exc}")


def _local(argv: list[str], port: int) -> list[str]:
    """A service command as run here: executables from this virtualenv, the API on a free loopback port."""
    out = []
    for arg in argv:
        if (BIN / arg).is_file() and not out:
            arg = str(BIN / arg)
        elif arg == "python" and not out:
            arg = sys.executable
        out.append(arg)
    if "--port" in out:
        out[out.index("--port") + 1] = str(port)
    if "--host" in out:
        out[out.index("--host") + 1] = "127.0.0.1"
    return out


def _wait_healthy(check: Callable[[], subprocess.CompletedProcess[str]], what: str, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result.returncode == 0:
            return
        assert time.monotonic() < deadline, f"{what} never became healthy: {result.stderr[-500:]}"
        time.sleep(1)


def test_readme_steps_cover_the_documented_flow() -> None:
    steps = readme_steps()
    assert steps[0] == "cp .env.example .env"
    assert any(s.startswith("docker compose up -d") for s in steps)
    assert sum(s.startswith("curl ") for s in steps) == 3


@pytest.mark.slow
def test_readme_production_steps_with_local_services(tmp_path: Path, create_database: Callable[[str], str]) -> None:
    compose_binary()
    _require_redis()
    database_url = create_database("postgresql")
    data_dir = tmp_path / "data"
    sets_dir = tmp_path / "test-sets"
    demo.build_test_set(sets_dir / "demo-set", scanners=2, cases=1, size=(512, 384), seed=5)
    port = _free_port()
    processes: list[subprocess.Popen[bytes]] = []
    env: dict[str, str] = {}
    token = ""
    config: dict[str, Any] = {}
    project = tmp_path / "project"
    try:
        for step in readme_steps():
            words = shlex.split(step.split("$(")[0]) if "$(" not in step else []
            if step == "cp .env.example .env":
                # the README says: set POSTGRES_PASSWORD (and size the workers to the machine)
                text = (REPO_ROOT / ".env.example").read_text()
                text = re.sub(r"(?m)^POSTGRES_PASSWORD=.*$", f"POSTGRES_PASSWORD={uuid.uuid4().hex}", text)
                text = re.sub(r"(?m)^MIDOG_CPU_CONCURRENCY=.*$", "MIDOG_CPU_CONCURRENCY=1", text)
                text = re.sub(r"(?m)^MIDOG_DATA_HOST_DIR=.*$", f"MIDOG_DATA_HOST_DIR={data_dir}", text)
                text = re.sub(r"(?m)^MIDOG_TEST_SETS_DIR=.*$", f"MIDOG_TEST_SETS_DIR={sets_dir}", text)
                project_copy(project, text)
            elif step.startswith("sudo install -d "):
                # the directories named in .env (here: under the test's scratch directory)
                host_dirs = [
                    w.replace("/srv/midog/data", str(data_dir)).replace("/srv/midog/test-sets", str(sets_dir))
                    for w in shlex.split(step)[1:]
                    if w.startswith("/")
                ]
                subprocess.run(["install", "-d", *host_dirs], check=True)
                assert host_dirs == [str(data_dir), str(sets_dir)]
            elif step.startswith("docker compose config"):
                checked = subprocess.run(
                    [compose_binary(), "config", "--quiet"], cwd=project, capture_output=True, text=True, check=False
                )
                assert checked.returncode == 0, checked.stderr
                resolved = subprocess.run(
                    [compose_binary(), "config"], cwd=project, capture_output=True, text=True, check=True
                )
                config = yaml.safe_load(resolved.stdout)
            elif step.startswith("docker compose build"):
                continue  # no image builder here: the services' commands run from this checkout instead
            elif step.startswith("docker compose up -d"):
                services = config["services"]
                env = {k: v for k, v in os.environ.items() if not k.startswith("MIDOG_")}
                env.update({k: str(v) for k, v in services["api"]["environment"].items() if k.startswith("MIDOG_")})
                assert env["MIDOG_DATA_DIR"] == str(data_dir)  # from .env, as in the containers
                env.update(
                    MIDOG_DATABASE_URL=database_url,
                    MIDOG_REDIS_URL=REDIS_URL,
                    MIDOG_HEALTHCHECK_URL=f"http://127.0.0.1:{port}/api/v1/health",
                )
                migrate = subprocess.run(
                    _local(services["migrate"]["command"], port),
                    cwd=REPO_ROOT,
                    env=env,
                    capture_output=True,
                    text=True,
                    check=False,
                )
                assert migrate.returncode == 0, migrate.stderr[-2000:]
                for name in ("api", "worker-cpu", "beat"):
                    log = (tmp_path / f"{name}.log").open("wb")
                    processes.append(
                        subprocess.Popen(
                            _local(services[name]["command"], port),
                            cwd=REPO_ROOT,
                            env=env,
                            stdout=log,
                            stderr=subprocess.STDOUT,
                        )
                    )
            elif step.startswith("docker compose ps"):
                for name in ("api", "worker-cpu", "beat"):
                    argv = _local(config["services"][name]["healthcheck"]["test"][1:], port)

                    def check(argv: list[str] = argv, env: dict[str, str] = env) -> subprocess.CompletedProcess[str]:
                        return subprocess.run(
                            argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
                        )

                    _wait_healthy(check, name)
            elif step.startswith("TOKEN=$(docker compose exec -T api "):
                inner = shlex.split(step.removeprefix("TOKEN=$(docker compose exec -T api ").rstrip(")"))
                created = subprocess.run(
                    _local(inner, port), cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False
                )
                assert created.returncode == 0, created.stderr
                token = created.stdout.strip()
                assert token.startswith("mdg_")
            elif words and words[0] == "curl":
                method = words[words.index("-X") + 1]
                url = next(w for w in words if w.startswith("http://"))
                url = url.replace("http://127.0.0.1:8000", f"http://127.0.0.1:{port}")
                body = json.loads(words[words.index("-d") + 1].replace("/test-sets/", f"{sets_dir}/"))
                headers = {"Authorization": f"Bearer {token}"}
                response = httpx.request(method, url, json=body, headers=headers, timeout=60)
                assert response.status_code == 201, (step, response.text)
            else:
                pytest.fail(f"README production step not followed by this test: {step}")

        # a participant submits with the client; the entry reaches the leaderboard page
        base = f"http://127.0.0.1:{port}"
        team = httpx.post(
            f"{base}/api/v1/auth/register",
            json={"team_name": "Readers", "email": "r@example.org", "password": "a-long-password"},
            timeout=30,
        )
        assert team.status_code == 201, team.text
        truth = json.loads((sets_dir / "demo-set" / "ground-truth" / "ground-truth.json").read_text())
        predictions = tmp_path / "predictions.json"
        predictions.write_text(
            json.dumps(
                {
                    name: {"type": "Multiple points", "points": [{"point": p, "probability": 0.9} for p in points]}
                    for name, points in truth.items()
                }
            )
        )
        cli_env = {**env, "XDG_CONFIG_HOME": str(tmp_path / "config"), "COLUMNS": "200"}
        cli = [sys.executable, "-c", "from app.cli import main; main()"]
        login = subprocess.run(
            [*cli, "login", "--server", base, "--email", "r@example.org", "--password", "a-long-password"],
            env=cli_env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert login.returncode == 0, login.stderr
        submit_started = time.monotonic()
        submitted = subprocess.run(
            [*cli, "submit", "midog/preliminary", str(predictions), "--wait", "--method", "ground truth"],
            env=cli_env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert submitted.returncode == 0, submitted.stdout + submitted.stderr
        assert time.monotonic() - submit_started < 60  # sent at once, not left for the reconciler
        assert "succeeded" in submitted.stdout
        deadline = time.monotonic() + 10  # the board is rebuilt just after the result commits
        page = httpx.get(f"{base}/phases/1/leaderboard", timeout=30)
        while "Readers" not in page.text and time.monotonic() < deadline:
            time.sleep(0.3)
            page = httpx.get(f"{base}/phases/1/leaderboard", timeout=30)
        assert page.status_code == 200
        assert "Readers" in page.text
        assert "<strong>1.000</strong>" in page.text  # the ground truth scores F1 1 (eps formulas round to 1.000)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
