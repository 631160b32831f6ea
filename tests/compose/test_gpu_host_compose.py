"""docker-compose.gpu-host.yml validated by Debian's docker-compose (`config` needs no engine): a GPU host is
`midog-eval gpu-host` with --api, --token-file, --broker, --cache-dir and its GPU class, beside the sandbox
service that runs participant code for it; no database URL, storage key or control-host env file reaches it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).parent))

from compose_helpers import REPO_ROOT, compose_binary

FILE = "docker-compose.gpu-host.yml"


def _config(root: Path, env_text: str | None = None) -> subprocess.CompletedProcess[str]:
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO_ROOT / FILE, root / FILE)
    (root / ".env").write_text(env_text if env_text is not None else (REPO_ROOT / "gpu-host.env.example").read_text())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MIDOG_", "POSTGRES_", "REDIS_"))}
    return subprocess.run(
        [compose_binary(), "-f", FILE, "config"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _resolved(tmp_path: Path) -> dict[str, Any]:
    result = _config(tmp_path / "gpu-host")
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


def _volumes(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Volumes by target, whether compose wrote them short (`src:dst:ro`) or long."""
    out = {}
    for v in service.get("volumes", []):
        if isinstance(v, str):
            source, target, *mode = v.split(":")
            out[target] = {"source": source, "read_only": mode == ["ro"]}
        else:
            out[v["target"]] = {"source": v.get("source"), "read_only": bool(v.get("read_only"))}
    return out


def _option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_the_gpu_host_runs_gpu_host_with_api_token_broker_cache_and_class(tmp_path: Path) -> None:
    services = _resolved(tmp_path)["services"]
    assert set(services) == {"gpu-host", "sandbox"}
    host = services["gpu-host"]
    command = host["command"]
    assert command[:2] == ["midog-eval", "gpu-host"]
    assert _option(command, "--api") == "https://eval.example.org"
    assert _option(command, "--token-file") == "/etc/midog/runner-token"
    assert _option(command, "--broker").startswith("rediss://")
    cache = _option(command, "--cache-dir")
    assert _option(command, "--gpu-class") == "gpu"
    volumes = _volumes(host)
    assert volumes["/etc/midog/runner-token"]["read_only"] is True
    assert cache in volumes
    # the sandbox service runs participant code in the jobs' directories under the cache, for uid 10001
    sandbox = services["sandbox"]
    assert _option(sandbox["command"], "--allow") == cache
    assert _option(sandbox["command"], "--worker-uid") == host["user"].split(":")[0]
    assert cache in _volumes(sandbox)
    assert host["healthcheck"]["test"][2:] == ["docker/healthcheck.py", "gpu-host", cache]
    assert sandbox["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]


def test_no_database_url_storage_key_or_env_file_reaches_a_gpu_host(tmp_path: Path) -> None:
    resolved = _resolved(tmp_path)
    for name, service in resolved["services"].items():
        assert "env_file" not in service, name
        environment = service.get("environment") or {}
        assert not {"MIDOG_DATABASE_URL", "DATABASE_URL", "MIDOG_S3_SECRET_KEY", "MIDOG_S3_ACCESS_KEY"} & set(
            environment
        ), name
    text = yaml.safe_dump(resolved)
    assert "postgresql" not in text
    assert "MIDOG_DATABASE_URL" not in (REPO_ROOT / "gpu-host.env.example").read_text()


def test_a_gpu_host_without_api_or_token_is_refused(tmp_path: Path) -> None:
    example = (REPO_ROOT / "gpu-host.env.example").read_text().splitlines()
    for missing in ("MIDOG_API_URL", "MIDOG_RUNNER_TOKEN_FILE", "MIDOG_BROKER_URL", "MIDOG_HOST_NAME"):
        env = "\n".join(line for line in example if not line.startswith(missing + "="))
        result = _config(tmp_path / missing, env)
        assert result.returncode != 0, missing
        assert missing in result.stderr, missing
