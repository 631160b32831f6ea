"""SandboxSpec validation, the participant-facing reasons, and the engine flags each backend produces."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from worker.sandbox import (
    MEMORY_LIMIT,
    OUTPUT_LIMIT,
    TIME_LIMIT,
    BwrapBackend,
    DockerBackend,
    Mount,
    PodmanBackend,
    SandboxError,
    SandboxResult,
    SandboxSpec,
    get_backend,
)
from worker.sandbox.podman import PODMAN_SECCOMP, strict_seccomp_profile


def spec(**overrides: object) -> SandboxSpec:
    values: dict[str, object] = {"label": "eval-42", "wall_seconds": 10.0, "image": "sha256abc"}
    values.update(overrides)
    return SandboxSpec(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "overrides",
    [
        {"label": "../etc"},
        {"label": "a b"},
        {"uid": 0},
        {"gid": 0},
        {"wall_seconds": 0},
        {"memory_bytes": 0},
        {"pids": -1},
        {"cpus": 0},
        {"env": {"BAD NAME": "x"}},
        {"labels": {"k": "v,w"}},
    ],
)
def test_spec_refuses_unsafe_values(overrides: dict[str, object]) -> None:
    with pytest.raises(SandboxError):
        spec(**overrides)


@pytest.mark.parametrize(
    ("source", "target"),
    [("/data", "relative"), ("/data", "/output"), ("/data", "/tmp"), ("/data", "/a/../b"), ("/a:b", "/input")],
)
def test_mounts_refuse_reserved_or_ambiguous_paths(source: str, target: str) -> None:
    with pytest.raises(SandboxError):
        Mount(Path(source), target)


def test_environment_is_an_allow_list() -> None:
    assert spec(env={"CASE": "1"}).environment() == {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": "/tmp",
        "LANG": "C.UTF-8",
        "CASE": "1",
    }
    assert spec(env={"CASE": "1"}, base_env=False).environment() == {"CASE": "1"}


def result(**flags: object) -> SandboxResult:
    values: dict[str, object] = {
        "exit_code": 0,
        "timed_out": False,
        "memory_exceeded": False,
        "output_exceeded": False,
        "wall_seconds": 1.0,
        "output_dir": Path("/x"),
        "stderr_tail": "Traceback: secret label 17",
    }
    values.update(flags)
    return SandboxResult(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("flags", "reason"),
    [
        ({}, None),
        ({"timed_out": True, "exit_code": 137, "memory_exceeded": True}, TIME_LIMIT),
        ({"memory_exceeded": True, "exit_code": 137}, MEMORY_LIMIT),
        ({"output_exceeded": True}, OUTPUT_LIMIT),
        ({"exit_code": 2}, "the program exited with status 2"),
        ({"exit_code": 139}, "the program was killed by signal 11"),
        ({"exit_code": 1, "pids_exceeded": True}, "process limit exceeded"),
    ],
)
def test_reasons_are_built_from_flags_only(flags: dict[str, object], reason: str | None) -> None:
    outcome = result(**flags)
    assert outcome.reason == reason
    assert outcome.ok is (reason is None)


def test_backend_setting() -> None:
    assert isinstance(get_backend("bwrap"), BwrapBackend)
    assert type(get_backend("podman")) is PodmanBackend
    assert isinstance(get_backend("docker"), DockerBackend)
    with pytest.raises(SandboxError, match="unknown sandbox backend"):
        get_backend("chroot")


def _flag_values(args: list[str], flag: str) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args) if a == flag]


def test_podman_flags(tmp_path: Path) -> None:
    s = spec(mounts=(Mount(tmp_path, "/input"),), labels={"midog.evaluation": "42"}, gpu=1, memory_bytes=1000)
    backend = PodmanBackend(runtime_dir=tmp_path / "rt")
    args = backend.run_arguments(s, "midog-x", tmp_path / "out")
    assert args[-1] == "sha256abc"
    assert _flag_values(args, "--network") == ["none"]
    assert _flag_values(args, "--runtime") == ["runc"]
    assert _flag_values(args, "--user") == ["10001:10001"]
    assert _flag_values(args, "--cap-drop") == ["all"]
    assert _flag_values(args, "--security-opt")[0] == "no-new-privileges"
    if PODMAN_SECCOMP.exists():
        assert _flag_values(args, "--security-opt")[1] == f"seccomp={tmp_path / 'rt' / 'seccomp.json'}"
    assert _flag_values(args, "--memory") == _flag_values(args, "--memory-swap") == ["1000"]
    assert "--read-only" in args
    assert "--read-only-tmpfs=false" in args
    assert f"{tmp_path}:/input:ro,nosuid,nodev" in _flag_values(args, "-v")
    assert set(_flag_values(args, "--label")) == {
        "midog.sandbox=eval-42",
        "midog.evaluation=42",
        f"midog.sandbox.owner={backend.owner}",
    }
    assert backend.owner != PodmanBackend(runtime_dir=tmp_path / "another").owner
    assert _flag_values(args, "--device") == ["nvidia.com/gpu=1"]
    assert {"nofile=1024:1024", "nproc=128:128"} <= set(_flag_values(args, "--ulimit"))


def test_docker_shares_the_flags_with_its_own_gpu_and_volume_syntax(tmp_path: Path) -> None:
    s = spec(mounts=(Mount(tmp_path, "/input"),), gpu=0)
    podman = PodmanBackend(runtime_dir=tmp_path / "rt").run_arguments(s, "n", tmp_path / "out")
    docker = DockerBackend(runtime_dir=tmp_path / "rt").run_arguments(s, "n", tmp_path / "out")
    assert docker[0] == "run"
    assert _flag_values(docker, "--gpus") == ["device=0"]
    assert "--runtime" not in docker
    assert f"{tmp_path}:/input:ro" in _flag_values(docker, "-v")
    for flag in (
        "--network",
        "--user",
        "--cap-drop",
        "--memory",
        "--memory-swap",
        "--pids-limit",
        "--cpus",
        "--shm-size",
        "--tmpfs",
        "--label",
        "--log-driver",
        "--ulimit",
        "--pull",
        "--workdir",
        "--env",
    ):
        assert _flag_values(docker, flag) == _flag_values(podman, flag), flag
    assert "--read-only" in docker
    assert "--read-only-tmpfs=false" not in docker
    assert "no-new-privileges" in _flag_values(docker, "--security-opt")


def test_no_gpu_flags_without_a_gpu(tmp_path: Path) -> None:
    args = PodmanBackend(runtime_dir=tmp_path / "rt").run_arguments(spec(), "n", tmp_path)
    assert "--device" not in args
    assert "--gpus" not in args


def test_strict_seccomp_profile_refuses_new_namespaces(tmp_path: Path) -> None:
    default = tmp_path / "default.json"
    default.write_text(
        json.dumps(
            {
                "defaultAction": "SCMP_ACT_ERRNO",
                "syscalls": [
                    {"names": ["read", "clone", "clone3", "unshare", "setns", "write"], "action": "SCMP_ACT_ALLOW"},
                    {"names": ["setns"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
                ],
            }
        )
    )
    written = strict_seccomp_profile(default, tmp_path / "rt" / "seccomp.json")
    assert written == tmp_path / "rt" / "seccomp.json"
    rules = json.loads(written.read_text())["syscalls"]
    allowed = {n for r in rules if r["action"] == "SCMP_ACT_ALLOW" and not r.get("args") for n in r["names"]}
    assert allowed == {"read", "write"}
    (clone,) = [r for r in rules if r["names"] == ["clone"]]
    assert clone["args"] == [{"index": 0, "value": 0x7E020000, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]
    assert {"names": ["unshare", "setns"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1} in rules
    assert strict_seccomp_profile(tmp_path / "missing.json", tmp_path / "x.json") is None


def test_bwrap_seccomp_program_is_well_formed() -> None:
    import platform
    import struct

    from worker.sandbox.seccomp import DENIED_X86_64, build_filter

    program = build_filter()
    if platform.machine() != "x86_64":
        assert program is None
        return
    assert program is not None
    insns = [struct.unpack("=HBBI", program[i : i + 8]) for i in range(0, len(program), 8)]
    assert len(insns) == 4 + len(set(DENIED_X86_64.values())) + 3
    deny = len(insns) - 2
    # Every conditional jump lands inside the program; every listed number jumps to the EPERM return.
    for position, (code, jt, jf, _) in enumerate(insns):
        if code in (0x15, 0x35):
            assert position + 1 + jt < len(insns)
            assert position + 1 + jf < len(insns)
    checks = insns[4 : deny - 1]
    assert all(code == 0x15 and position + 4 + 1 + jt == deny for position, (code, jt, _, _) in enumerate(checks))
    assert {k for _, _, _, k in checks} == set(DENIED_X86_64.values())
    assert insns[-3][3] == 0x7FFF0000  # allow
    assert insns[-2][3] == 0x00050001  # EPERM
    assert insns[-1][3] == 0x80000000  # kill: a foreign architecture


def test_hidden_phases_get_no_exit_status() -> None:
    assert result(exit_code=42).participant_reason(hidden=False) == "the program exited with status 42"
    assert result(exit_code=42).participant_reason(hidden=True) == "the program failed"
    assert result(exit_code=139).participant_reason(hidden=True) == "the program failed"
    assert result(memory_exceeded=True, exit_code=137).participant_reason(hidden=True) == MEMORY_LIMIT
    assert result(timed_out=True).participant_reason(hidden=True) == TIME_LIMIT
    assert result().participant_reason(hidden=True) is None


def test_engine_on_the_host_gets_host_paths(tmp_path: Path) -> None:
    from worker.sandbox import parse_host_paths

    mapping = parse_host_paths(f"/test-sets=/srv/midog/sets, {tmp_path}=/host{tmp_path}")
    assert mapping == {"/test-sets": "/srv/midog/sets", str(tmp_path): f"/host{tmp_path}"}
    backend = DockerBackend(runtime_dir=tmp_path / "rt", host_paths=mapping)
    assert backend.host_path(Path("/test-sets/a/images/001.tiff")) == "/srv/midog/sets/a/images/001.tiff"
    assert backend.host_path(Path("/test-sets")) == "/srv/midog/sets"
    assert backend.host_path(Path("/test-setsX/1.tiff")) == "/test-setsX/1.tiff"
    args = backend.run_arguments(spec(mounts=(Mount(tmp_path, "/input"),)), "n", tmp_path / "rt" / "out")
    assert set(_flag_values(args, "-v")) == {f"/host{tmp_path}:/input:ro", f"/host{tmp_path}/rt/out:/output:rw"}
    with pytest.raises(SandboxError, match="not '/worker/path=/host/path'"):
        parse_host_paths("test-sets=/srv")


def test_sandbox_faults_are_retried_as_infrastructure() -> None:
    from worker.errors import RetryableError, SubmissionError

    assert issubclass(SandboxError, RetryableError)
    assert not issubclass(SandboxError, SubmissionError)
