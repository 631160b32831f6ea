"""S1-S7 (docs/reliability-security.md, Sandbox scenarios) against every sandbox backend, each with a real hostile
probe program.

Where a probe could pass vacuously (a port nobody listens on, a canary path nobody writes), the test also
shows that the same probe detects the thing outside the sandbox.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import socket
import subprocess
import sys
import threading
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.host_checks import host_mounts_under
from tests.sandbox.conftest import PROBES, SANDBOX_UID
from tests.sandbox.images import label_processes, require_backend
from worker.sandbox import (
    MEMORY_LIMIT,
    OUTPUT_LIMIT,
    TIME_LIMIT,
    Backend,
    Mount,
    PodmanBackend,
    SandboxError,
    SandboxResult,
    SandboxSpec,
)
from worker.sandbox.podman import host_ids
from worker.sandbox.spec import BASE_ENV

Spec = Callable[..., SandboxSpec]
PYTHON = "/usr/bin/python3"


def probe_json(result: SandboxResult) -> dict:
    assert result.exit_code == 0, (result.reason, result.stderr_tail[-2000:])
    return json.loads(result.stdout_tail.strip().splitlines()[-1])


def run_probe(backend: Backend, spec: SandboxSpec, tmp_path: Path, *argv: str) -> SandboxResult:
    output = tmp_path / "out"
    return backend.run(spec, [PYTHON, *argv], output_dir=output)


def run_processes(backend: Backend, spec: SandboxSpec) -> list[int]:
    """This test's sandboxed processes (by its label; a podman run's by its containers), not other runs'."""
    ids = backend.list_containers(spec.label) if isinstance(backend, PodmanBackend) else []
    return label_processes(host_ids(spec)[0], spec.label, ids)


def assert_nothing_left(backend: Backend, spec: SandboxSpec) -> None:
    # This test's runs only (its label): another test's run of the same uid may be running meanwhile. A podman
    # run's processes are its container's, checked by label just below.
    assert label_processes(host_ids(spec)[0], spec.label) == []
    if isinstance(backend, PodmanBackend):
        assert backend.list_containers(spec.label) == []
    assert not (backend.runtime_dir / backend.name / spec.label).exists()  # type: ignore[attr-defined]


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP server on the host's loopback that accepts connections, standing in for API/DB/broker."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                conn.close()
            except OSError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    server.close()


def test_S1_no_network(backend: Backend, make_spec: Spec, tmp_path: Path, listener: int) -> None:
    targets = ["127.0.0.1:5432", "127.0.0.1:6379", "127.0.0.1:8000", f"127.0.0.1:{listener}"]
    # The host's outward address too (found without sending anything): routing out of the namespace.
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("10.255.255.255", 1))
        targets.append(f"{probe.getsockname()[0]}:5432")
    # Control: outside the sandbox the probe reaches the listener, so "failed" inside means something.
    outside = subprocess.run(
        [sys.executable, str(PROBES / "net_probe.py"), f"127.0.0.1:{listener}"], capture_output=True, check=True
    )
    assert json.loads(outside.stdout)["tcp"][f"127.0.0.1:{listener}"] == "connected"

    report = probe_json(
        run_probe(
            backend,
            make_spec(),
            tmp_path,
            "/probes/net_probe.py",
            *targets,
            "example.com",
            "redis",
            "postgres",
        )
    )
    assert all(state.startswith("failed") for state in report["tcp"].values()), report["tcp"]
    for name in ("example.com", "redis", "postgres"):
        assert report["dns"][name].startswith("failed"), report["dns"]
    assert all(state.startswith("failed") for state in report["udp_dns"].values()), report["udp_dns"]
    assert report["interfaces"] == ["lo"]


def test_S2_filesystem_confined(
    backend: Backend, make_spec: Spec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    test_set = tmp_path / "set"
    (test_set / "images").mkdir(parents=True)
    (test_set / "images" / "001.tiff").write_bytes(b"II*\x00image")
    labels = test_set / "ground-truth" / "ground-truth.json"
    labels.parent.mkdir()
    labels.write_text('{"001.tiff": [[1, 2, 0]]}')
    secret = "midog-secret-7f3a9c"
    monkeypatch.setenv("MIDOG_SECRET_KEY", secret)
    monkeypatch.setenv("DATABASE_URL", f"postgresql://admin:{secret}@127.0.0.1/db")
    spec = make_spec(mounts=(Mount(test_set / "images", "/input"),), env={"MIDOG_CASE": "001.tiff"})
    hidden = [
        str(labels),
        str(test_set / "ground-truth"),
        str(Path(__file__).resolve().parents[1] / "data"),
        str(Path.cwd()),
        "/etc/shadow",
        "/root",
        "/run/podman/podman.sock",
        "/var/run/docker.sock",
    ]
    assert labels.exists()

    report = probe_json(run_probe(backend, spec, tmp_path, "/probes/fs_probe.py", *hidden))

    assert report["found"] == []
    assert report["input_files"] == ["/input/001.tiff"]
    assert report["modified_input"] == []
    assert (test_set / "images" / "001.tiff").read_bytes() == b"II*\x00image"
    assert {"/output", "/tmp"} <= set(report["writable"]) <= {"/output", "/tmp", "/dev/shm"}
    assert report["uid"] == report["euid"] == SANDBOX_UID
    assert report["gid"] == SANDBOX_UID
    assert secret not in json.dumps(report["environ"])
    engine_defaults = {"PWD", "HOSTNAME", "TERM", "container"}
    assert set(report["environ"]) <= set(BASE_ENV) | {"MIDOG_CASE"} | engine_defaults
    assert report["environ"]["MIDOG_CASE"] == "001.tiff"


def test_S3_fork_bomb_stopped_by_pids_limit(backend: Backend, make_spec: Spec, tmp_path: Path) -> None:
    spec = make_spec(pids=32)
    result = run_probe(backend, spec, tmp_path, "/probes/fork_bomb.py", "500")
    report = probe_json(result)
    assert 0 < report["started"] < 32
    assert report["error"] is not None
    assert "temporarily unavailable" in report["error"]
    assert_nothing_left(backend, spec)


@pytest.mark.slow
def test_S3_shell_fork_bomb_ends_at_time_limit(backend: Backend, make_spec: Spec, tmp_path: Path) -> None:
    spec = make_spec(pids=32, wall_seconds=3.0)
    result = backend.run(spec, ["/bin/sh", "/probes/fork_bomb.sh"], output_dir=tmp_path / "out")
    # The bomb either gives up when its forks are refused or is killed at the wall clock; either way the
    # refusals prove the pids limit held it, and the run ends in bounded time leaving nothing behind.
    assert "fork" in result.stderr_tail.lower(), result
    assert result.wall_seconds < 60  # a 3 s limit: the bound catches a run that is never stopped
    if result.timed_out:
        assert result.reason == TIME_LIMIT
    assert_nothing_left(backend, spec)


def test_S4_memory_hog_killed(backend: Backend, make_spec: Spec, tmp_path: Path) -> None:
    spec = make_spec(memory_bytes=128 * 1024**2)
    result = run_probe(backend, spec, tmp_path, "/probes/memory_hog.py", "2048")
    assert result.memory_exceeded, (result, result.stdout_tail[-300:])
    assert result.reason == MEMORY_LIMIT
    assert "limit not enforced" not in result.stdout_tail
    reached = int(result.stdout_tail.strip().splitlines()[-1].split()[0])
    assert 16 <= reached <= 128
    assert_nothing_left(backend, spec)


@pytest.mark.parametrize("mode", ["big", "many"])
def test_S5_output_flood_stopped_at_quota(backend: Backend, make_spec: Spec, tmp_path: Path, mode: str) -> None:
    """Both ways of holding the quota: the watched directory (every backend) and, for bwrap under a root
    worker, the size-limited tmpfs in the run's own mount namespace."""
    variants = {"watchdog": False}
    if not isinstance(backend, PodmanBackend) and os.geteuid() == 0:
        variants["tmpfs"] = True
    quota = 1024**2
    for name, kernel_quota in variants.items():
        backend.output_tmpfs = kernel_quota  # type: ignore[attr-defined]
        spec = make_spec(output_bytes=quota, output_files=64, wall_seconds=20.0)
        out = tmp_path / name
        result = backend.run(spec, [PYTHON, "/probes/output_flood.py", mode, str(512 * quota)], output_dir=out)
        assert result.output_exceeded, (name, result)
        assert result.reason == OUTPUT_LIMIT
        copied = [p for p in out.rglob("*") if p.is_file()]
        assert copied, f"{name}: the output written before the quota is still handed back"
        assert sum(p.stat().st_size for p in copied) <= quota
        assert len(copied) <= 64
        assert not result.timed_out
        assert_nothing_left(backend, spec)


def test_S6_stderr_never_reaches_the_participant(backend: Backend, make_spec: Spec, tmp_path: Path) -> None:
    hidden_label = "HIDDEN-LABEL-31337"
    inputs = tmp_path / "input"
    inputs.mkdir()
    (inputs / "001.txt").write_text(hidden_label)
    spec = make_spec(mounts=(Mount(inputs, "/input"),))
    result = run_probe(backend, spec, tmp_path, "/probes/stderr_leak.py")
    # The organiser's tail holds the leak, so the check below is not vacuous.
    assert hidden_label in result.stderr_tail
    assert hidden_label in result.stdout_tail
    assert result.reason == "the program exited with status 3"
    assert hidden_label not in (result.reason or "")


def test_S7_malicious_pickle_runs_only_inside(backend: Backend, make_spec: Spec, tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    canary = tmp_path / "canary" / "pwned.txt"
    model = model_dir / "model.pt"
    subprocess.run([sys.executable, str(PROBES / "pickle_payload.py"), "make", str(model), str(canary)], check=True)

    # The upload path of model archives validates without loading: the payload must not run there.
    archive = tmp_path / "submission.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("manifest.json", json.dumps({"format_version": 1, "model": "model.pt"}))
        zf.write(model, "model.pt")
        zf.writestr("model/code/__torch__.py", "")
        zf.write(model, "model/constants.pkl")
    from worker.archives.manifest import ArchiveError
    from worker.archives.validate import validate_archive

    with contextlib.suppress(ArchiveError):
        validate_archive(archive)
    assert not canary.exists()

    spec = make_spec(mounts=(Mount(model_dir, "/model"),))
    result = run_probe(backend, spec, tmp_path, "/probes/pickle_payload.py", "load", "/model/model.pt")
    assert result.exit_code == 0, result.stderr_tail
    # The payload did run, inside: it reached the sandbox's /output, never the host path.
    assert (tmp_path / "out" / "payload-ran.txt").read_text() in {
        "canary written",
        "canary refused: PermissionError",
        "canary refused: OSError",
    }
    assert not canary.exists()
    assert not canary.parent.exists()

    # Control: the same file loaded outside the sandbox does write the canary.
    outside = tmp_path / "outside-canary" / "pwned.txt"
    subprocess.run([sys.executable, str(PROBES / "pickle_payload.py"), "make", str(model), str(outside)], check=True)
    subprocess.run(
        [sys.executable, str(PROBES / "pickle_payload.py"), "load", str(model)], check=True, capture_output=True
    )
    assert outside.read_text() == "payload executed"


def test_wall_clock_limit_kills_and_removes(backend: Backend, make_spec: Spec, tmp_path: Path) -> None:
    spec = make_spec(wall_seconds=1.5)
    result = backend.run(spec, ["/bin/sh", "-c", "sleep 60 & sleep 60"], output_dir=tmp_path / "out")
    assert result.timed_out
    assert result.reason == TIME_LIMIT
    assert result.wall_seconds < 60  # a 1.5 s limit: the bound catches a run that is never stopped
    assert_nothing_left(backend, spec)


def test_success_hands_back_output(backend: Backend, make_spec: Spec, tmp_path: Path) -> None:
    spec = make_spec()
    script = "import os; open('/output/r.json','w').write('[1]'); os.symlink('/etc/passwd', '/output/link')"
    result = run_probe(backend, spec, tmp_path, "-c", script)
    assert result.ok
    assert result.reason is None
    assert result.exit_code == 0
    assert (tmp_path / "out" / "r.json").read_text() == "[1]"
    # Links the participant leaves are never followed nor copied.
    assert not (tmp_path / "out" / "link").exists()
    assert_nothing_left(backend, spec)


REAPER = """
import sys
from pathlib import Path
from worker.sandbox import BwrapBackend, PodmanBackend, Mount, SandboxSpec
kind, runtime_dir, image, label, uid, userns = sys.argv[1:7]
UID = int(uid)
backend = BwrapBackend(runtime_dir=Path(runtime_dir)) if kind == "bwrap" else PodmanBackend(runtime_dir=Path(runtime_dir))
spec = SandboxSpec(label=label, wall_seconds=120, uid=UID, gid=UID, image=image or None,
                   mounts=(Mount(Path("/usr"), "/usr"),) if kind == "podman" else (),
                   userns_base=int(userns) if userns != "none" else None)
print("starting", flush=True)
backend.run(spec, ["/bin/sh", "-c", "echo up > /output/up; sleep 120"], output_dir=Path(runtime_dir) / "x")
"""


@pytest.mark.slow
def test_reap_after_worker_killed(backend: Backend, make_spec: Spec, tmp_path: Path) -> None:
    """R10: a run holds no mount in the host's namespace while it runs, nor after its worker is SIGKILLed."""
    import time

    spec = make_spec()
    runtime_dir: Path = backend.runtime_dir  # type: ignore[attr-defined]
    worker = subprocess.Popen(
        [
            *(sys.executable, "-c", REAPER, backend.name, str(runtime_dir), spec.image or "", spec.label),
            *(str(SANDBOX_UID), str(spec.userns_base or "none")),
        ],
        cwd=Path(__file__).resolve().parents[2],
    )
    runs = runtime_dir / backend.name / spec.label
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not run_processes(backend, spec):
            time.sleep(0.1)
        assert run_processes(backend, spec), "the sandboxed run did not start"
        assert host_mounts_under(runtime_dir) == []
    finally:
        worker.kill()
        worker.wait()
    assert runs.exists(), "the dead worker's run left state behind, as a crash would"
    assert host_mounts_under(runtime_dir) == []
    assert spec.label in backend.leftover_labels()
    if isinstance(backend, PodmanBackend):
        # Another worker's start-up sweep on the same engine (its own runtime directory) leaves this run alone.
        assert backend.list_containers(spec.label), "the dead worker's container is still on the engine"
        assert spec.label not in PodmanBackend(runtime_dir=tmp_path / "another-worker").leftover_labels()
    assert backend.reap(spec.label) >= 1
    assert spec.label not in backend.leftover_labels()
    deadline = time.monotonic() + 60
    while run_processes(backend, spec) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert_nothing_left(backend, spec)


def test_sandbox_failures_are_not_blamed_on_the_code(backend: Backend, make_spec: Spec, tmp_path: Path) -> None:
    """A sandbox that cannot start raises SandboxError (retried as infrastructure), not a participant reason."""
    if isinstance(backend, PodmanBackend):
        spec = make_spec(image="localhost/midog-test/absent:none")
    else:
        spec = make_spec(workdir="/no/such/dir")
    with pytest.raises(SandboxError):
        backend.run(spec, ["/bin/sh", "-c", "exit 1"], output_dir=tmp_path / "out")
    assert_nothing_left(backend, spec)
    # The same command in a working sandbox is the program's own failure, with a participant reason.
    result = backend.run(make_spec(), ["/bin/sh", "-c", "exit 1"], output_dir=tmp_path / "out2")
    assert result.reason == "the program exited with status 1"


def test_no_namespaces_mounts_or_shared_kernel_interfaces(backend: Backend, make_spec: Spec, tmp_path: Path) -> None:
    # Control: root on the host may do all of it, so the probe does detect what it tries.
    if os.geteuid() == 0:
        outside = subprocess.run([sys.executable, str(PROBES / "escape_probe.py")], capture_output=True, check=True)
        assert json.loads(outside.stdout)["unshare_user"] == "allowed"
    report = probe_json(run_probe(backend, make_spec(), tmp_path, "/probes/escape_probe.py"))
    # Refused by capabilities or a seccomp filter; EFAULT/EINVAL would mean the kernel code was reached.
    assert set(report.values()) <= {"EPERM", "ENOSYS"}, report
    assert len(report) == 10


@pytest.mark.slow
def test_S7_malicious_torch_file_runs_only_inside(backend: Backend, make_spec: Spec, tmp_path: Path) -> None:
    """The model runtime's own stack (this virtualenv's Python and torch, mounted read-only) in the sandbox."""
    torch_spec = importlib.util.find_spec("torch")
    if torch_spec is None:
        pytest.skip("torch is not installed (the inference extra)")
    venv = Path(sys.prefix)
    interpreter = Path(sys.base_prefix)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    canary = tmp_path / "canary" / "pwned.txt"
    model = model_dir / "model.pt"
    subprocess.run([sys.executable, str(PROBES / "torch_payload.py"), "make", str(model), str(canary)], check=True)
    assert not canary.exists()

    mounts = (Mount(model_dir, "/model"), Mount(venv, str(venv)))
    if not str(interpreter).startswith("/usr"):
        mounts += (Mount(interpreter, str(interpreter)),)
    spec = make_spec(mounts=mounts, memory_bytes=1024**3, pids=256, wall_seconds=120.0)
    python = str(venv / "bin" / "python")
    result = backend.run(
        spec, [python, "/probes/torch_payload.py", "load", "/model/model.pt"], output_dir=tmp_path / "out"
    )
    report = probe_json(result)
    assert report["weights_only"].startswith("refused")
    assert report["unsafe"] == "loaded"
    assert (tmp_path / "out" / "torch-payload-ran.txt").read_text() == str(SANDBOX_UID)
    assert not canary.exists()
    assert_nothing_left(backend, spec)


def test_worker_python_stack_runs_inside_with_nothing_else_of_the_repository(
    backend: Backend, make_spec: Spec, tmp_path: Path
) -> None:
    from worker.sandbox.runtime import python_runtime

    mounts, interpreter = python_runtime(("worker",))
    repository = Path(__file__).resolve().parents[2]
    script = (
        "import json, os, numpy, worker.evaluation.metrics as m; "
        f"print(json.dumps({{'module': m.__file__, 'repo': sorted(os.listdir({str(repository)!r}))}}))"
    )
    report = probe_json(
        backend.run(
            make_spec(mounts=mounts, memory_bytes=512 * 1024**2),
            [interpreter, "-c", script],
            output_dir=tmp_path / "out",
        )
    )
    assert report["module"] == str(repository / "worker" / "evaluation" / "metrics.py")
    # Only the mounted directories appear: no tests, configuration, .env or data of the repository.
    mounted_here = sorted(Path(m.target).name for m in mounts if Path(m.target).parent == repository)
    assert "worker" in mounted_here
    assert report["repo"] == mounted_here


@pytest.mark.parametrize("missing", ["memory", "pids", "seccomp"])
def test_R15_isolation_fails_closed(
    runtime_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    """A control that cannot be applied stops the run before participant code starts, unless the deployment
    explicitly allows it to be missing; then the same code runs."""
    require_backend("bwrap")
    from worker.sandbox import cgroups, isolation, seccomp
    from worker.sandbox.bwrap import BwrapBackend

    if missing == "seccomp":
        monkeypatch.setattr(seccomp, "build_filter", lambda: None)
    else:
        real_create = cgroups.create

        def create_without(name: str, **limits: Any) -> cgroups.RunCgroups:
            groups = real_create(name, **limits)
            path = groups.paths.pop(missing, None)
            if path is not None and path not in groups.paths.values():
                path.rmdir()
            return groups

        monkeypatch.setattr(cgroups, "create", create_without)
    canary = tmp_path / "canary"
    canary.mkdir(mode=0o777)
    canary.chmod(0o777)
    spec = SandboxSpec(
        label=f"r15-{missing}", wall_seconds=20, uid=SANDBOX_UID, gid=SANDBOX_UID, mounts=(Mount(canary, "/canary"),)
    )
    strict = BwrapBackend(runtime_dir=runtime_dir, allowed_missing=frozenset())
    with pytest.raises(isolation.IsolationError, match=missing if missing != "memory" else "memory cgroup"):
        strict.run(spec, ["/bin/sh", "-c", "echo ran > /output/ran"], output_dir=tmp_path / "out")
    assert not (tmp_path / "out" / "ran").exists()
    assert label_processes(SANDBOX_UID, spec.label) == []
    assert not (runtime_dir / "bwrap" / spec.label).exists()
    # The worker's start-up report names the control too.
    assert missing in (strict.problem() or "")

    allowed = BwrapBackend(runtime_dir=runtime_dir, allowed_missing=frozenset({missing}))
    assert allowed.problem() is None
    result = allowed.run(spec, ["/bin/sh", "-c", "echo ran > /output/ran"], output_dir=tmp_path / "out")
    assert result.ok, result
    assert (tmp_path / "out" / "ran").read_text() == "ran\n"
