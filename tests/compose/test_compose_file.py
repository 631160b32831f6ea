"""docker-compose.yml validated by Debian's docker-compose (`config` needs no engine): the services, their
health checks, Redis durability, the object store, migration ordering, the GPU reservation, the sandbox
service, and least privilege (D1): no service that handles uploads runs as root, none mounts a container-engine socket."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from compose_helpers import REPO_ROOT, compose_config, project_copy

LONG_RUNNING = ("postgres", "redis", "objects", "api", "worker-cpu", "worker-gpu", "sandbox", "beat")
APP_SERVICES = ("migrate", "api", "worker-cpu", "worker-gpu", "beat")


def test_services(resolved: dict[str, Any]) -> None:
    assert set(resolved["services"]) == {*LONG_RUNNING, "migrate"}


def test_every_long_running_service_has_a_health_check(resolved: dict[str, Any]) -> None:
    for name in LONG_RUNNING:
        check = resolved["services"][name].get("healthcheck")
        assert check is not None, name
        assert check["test"][0] in {"CMD", "CMD-SHELL"}, name
        assert check.get("interval"), name
        assert check.get("retries"), name
    assert "healthcheck" not in resolved["services"]["migrate"]  # a one-shot job


def test_health_check_scripts_exist_and_name_each_worker(resolved: dict[str, Any]) -> None:
    for name in ("api", "worker-cpu", "worker-gpu", "beat"):
        test = resolved["services"][name]["healthcheck"]["test"]
        assert test[1:3] == ["python", "docker/healthcheck.py"], name
        assert (REPO_ROOT / test[2]).is_file()
    for name, queue in (("worker-cpu", "cpu"), ("worker-gpu", "gpu")):
        service = resolved["services"][name]
        command = service["command"]
        node = command[command.index("--name") + 1]
        assert command[command.index("--queues") + 1] == queue
        assert service["healthcheck"]["test"][-2:] == ["worker", node]


def test_redis_keeps_the_queue(resolved: dict[str, Any]) -> None:
    command = " ".join(resolved["services"]["redis"]["command"])
    assert "--appendonly yes" in command
    assert "--appendfsync everysec" in command
    assert "--maxmemory-policy noeviction" in command
    assert any(v["target"] == "/data" for v in _volumes(resolved["services"]["redis"]))


def test_migrations_run_first_and_once(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    assert services["migrate"]["command"] == ["alembic", "upgrade", "head"]
    assert services["migrate"]["restart"] == "no"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("api", "worker-cpu", "worker-gpu", "beat"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert depends["redis"]["condition"] == "service_healthy", name


def test_application_services_share_storage_and_database(resolved: dict[str, Any]) -> None:
    urls = set()
    for name in APP_SERVICES:
        service = resolved["services"][name]
        env = service["environment"]
        urls.add(env["MIDOG_DATABASE_URL"])
        assert env["MIDOG_REDIS_URL"] == "redis://redis:6379/0", name
        data = env["MIDOG_DATA_DIR"]
        assert data == "/srv/midog/data", name
        volumes = {v["target"]: v for v in _volumes(service)}
        # uploads written by the api, read by the workers, at the same path as on the host
        assert volumes[data]["source"] == data, name
        assert volumes["/test-sets"]["source"] == "/srv/midog/test-sets", name
        assert volumes["/test-sets"]["read_only"] is True, name
    assert len(urls) == 1
    assert re.fullmatch(r"postgresql\+psycopg://midog:[^@]+@postgres:5432/midog", urls.pop())
    beat = resolved["services"]["beat"]["command"]
    assert beat[beat.index("--schedule") + 1].startswith("/srv/midog/data/")


def test_participant_code_runs_in_the_sandbox_service_with_the_gpu(resolved: dict[str, Any]) -> None:
    gpu, sandbox = resolved["services"]["worker-gpu"], resolved["services"]["sandbox"]
    env = gpu["environment"]
    assert env["MIDOG_MODEL_SANDBOX_BACKEND"] == "bwrap"
    assert env["MIDOG_SANDBOX_BACKEND"] == "podman"
    socket = env["MIDOG_SANDBOX_RUNNER_SOCKET"]
    assert sandbox["command"][sandbox["command"].index("--socket") + 1] == socket
    shared = {v["target"]: v["source"] for v in _volumes(gpu)}
    assert {v["target"]: v["source"] for v in _volumes(sandbox)}[str(Path(socket).parent)] == shared[
        str(Path(socket).parent)
    ]
    # The worker's uid is the one the service serves; participant code gets another.
    assert sandbox["command"][sandbox["command"].index("--worker-uid") + 1] == gpu["user"].split(":")[0]
    assert env["MIDOG_SANDBOX_UID"] != gpu["user"].split(":")[0]
    devices = sandbox["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia"
    assert devices[0]["capabilities"] == ["gpu"]
    assert "deploy" not in gpu
    assert gpu["build"]["dockerfile"] == "docker/Dockerfile.gpu"
    assert gpu["command"][gpu["command"].index("--queues") + 1] == "gpu"


def _runs_as_root(service: dict[str, Any]) -> bool:
    user = str(service.get("user", "")).split(":")[0]
    if user:
        return user in {"0", "root"}
    dockerfile = REPO_ROOT / service["build"]["dockerfile"] if "build" in service else None
    # Without `user:`, the image's last USER decides; images built from this repository set one.
    return dockerfile is None or not re.search(r"^USER (?!root\b)\S+", dockerfile.read_text(), re.MULTILINE)


def test_D1_no_service_that_handles_uploads_runs_as_root_or_mounts_an_engine_socket(resolved: dict[str, Any]) -> None:
    handle_uploads = ("api", "worker-cpu", "worker-gpu", "migrate", "beat")
    for name in handle_uploads:
        service = resolved["services"][name]
        assert not _runs_as_root(service), name
        assert not service.get("cap_add"), name
        assert not service.get("security_opt"), name
    for name, service in resolved["services"].items():
        sockets = [v for v in _volumes(service) if str(v.get("source", "")).endswith((".sock", "docker.sock"))]
        assert sockets == [], name
        assert "/var/run/docker.sock" not in {v["target"] for v in _volumes(service)}, name
    # The one privileged service is the sandbox runner, which parses no upload itself.
    assert _runs_as_root(resolved["services"]["sandbox"])
    assert resolved["services"]["sandbox"]["command"][:2] == ["midog-eval", "sandbox-runner"]


def test_dockerfiles_exist(resolved: dict[str, Any]) -> None:
    for name, service in resolved["services"].items():
        if "build" in service:
            dockerfile = REPO_ROOT / service["build"]["dockerfile"]
            assert dockerfile.is_file(), name
            assert "COPY app app" in dockerfile.read_text()


def test_the_object_store_serves_the_control_host_on_the_compose_network_only(resolved: dict[str, Any]) -> None:
    objects = resolved["services"]["objects"]
    assert objects["command"][:2] == ["server", "-dir=/data"]
    assert "-s3" in objects["command"]
    assert "-s3.port=8333" in objects["command"]
    assert "ports" not in objects  # reachable by the services of this file, not from outside
    assert any(v["target"] == "/data" and v["source"] == "objects-data" for v in _volumes(objects))
    assert objects["healthcheck"]["test"][-1] == "http://127.0.0.1:8333/healthz"
    for name in APP_SERVICES:
        env = resolved["services"][name]["environment"]
        assert env["MIDOG_OBJECT_STORE"] == "s3", name
        assert env["MIDOG_S3_ENDPOINT_URL"] == "http://objects:8333", name
        # the services sign with the key pair the store's one identity was created with
        assert env["MIDOG_S3_ACCESS_KEY"] == objects["environment"]["AWS_ACCESS_KEY_ID"], name
        assert env["MIDOG_S3_SECRET_KEY"] == objects["environment"]["AWS_SECRET_ACCESS_KEY"], name
    for name in ("api", "worker-cpu"):
        assert resolved["services"][name]["depends_on"]["objects"]["condition"] == "service_healthy", name


def test_a_missing_object_store_secret_is_refused(tmp_path: Path) -> None:
    env = "\n".join(
        line
        for line in (REPO_ROOT / ".env.example").read_text().splitlines()
        if not line.startswith("MIDOG_S3_SECRET_KEY")
    )
    result = compose_config(project_copy(tmp_path, env))
    assert result.returncode != 0
    assert "MIDOG_S3_SECRET_KEY" in result.stderr


def test_a_missing_database_password_is_refused(tmp_path: Path) -> None:
    env = "\n".join(
        line
        for line in (REPO_ROOT / ".env.example").read_text().splitlines()
        if not line.startswith("POSTGRES_PASSWORD")
    )
    result = compose_config(project_copy(tmp_path, env))
    assert result.returncode != 0
    assert "POSTGRES_PASSWORD" in result.stderr


def _volumes(service: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for v in service.get("volumes", []):
        if isinstance(v, str):
            source, target, *mode = v.split(":")
            out.append({"source": source, "target": target, "read_only": mode == ["ro"]})
        else:
            out.append({"source": v.get("source"), "target": v["target"], "read_only": bool(v.get("read_only"))})
    return out
