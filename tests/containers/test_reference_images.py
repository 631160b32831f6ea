"""Images that work like the MIDOG 2025 references run unchanged, as .tar.gz, in exec and invoke modes.

Each image (tests/containers/reference_images.py) has `useradd -m -r user` as USER, a package installed
with `pip install --user` that its program imports, reads /input/inputs.json first to pick its handler,
and reads its weights from /opt/ml/model (a model tarball) or the image. The outputs are scored with the
scoring core, so a wrong user, HOME, input path, inputs.json or weights location shows as an error or a
wrong score. Also here: the host stays safe with the image's own user (its uid 999 is a host id of the
unprivileged range, its files too, and it cannot read host files of uid 999, another team's upload or
the ground truth), the per-case logs, the failure lines, and invoke-mode start-up failures.
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.classification_set import STACKS, write_classification_set
from tests.containers.reference_images import base_image, build_reference_image
from tests.sandbox.images import build_image, image_exists, label_processes, require_backend
from worker.containers.image_archive import validate_image_archive
from worker.containers.invoke import NEVER_HEALTHY
from worker.containers.runner import ContainerRunner, ContainerSettings
from worker.errors import SubmissionError
from worker.evaluation.classification import evaluate_classification, read_ground_truth
from worker.evaluation.classification import read_predictions as read_stack_predictions
from worker.evaluation.io import read_predictions
from worker.evaluation.metrics import evaluate
from worker.evaluation.types import GroundTruth
from worker.runners import LOGS_DIR, RunRequest
from worker.sandbox import Mount, PodmanBackend, SandboxSpec

USERNS_BASE = 1_000_000_000
GROUND_TRUTH = {"001.tiff": [[0.1, 0.1, 0.0], [0.3, 0.3, 0.0]], "002.tiff": [[0.2, 0.3, 0.0]]}
# The image's weights: (x, y, probability) per detection, and the classes per stack (one page wrong).
IMAGE_WEIGHTS: dict[str, object] = {
    "001.tiff": [[0.1, 0.1, 0.9], [0.5, 0.5, 0.8]],
    "002.tiff": [[0.2, 0.3, 0.7]],
    **{name: labels for name, (_domain, labels) in STACKS.items()},
    "stack_1.tiff": ["atypical", "atypical", "normal", "normal"],
}
# The model tarball's: every detection right.
TARBALL_WEIGHTS = {"001.tiff": [[0.1, 0.1, 0.9], [0.3, 0.3, 0.8]], "002.tiff": [[0.2, 0.3, 0.7]]}


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    require_backend("podman")
    workdir = tmp_path_factory.mktemp("reference-images")
    return {
        mode: build_reference_image(workdir, mode=mode, weights=IMAGE_WEIGHTS, name=mode) for mode in ("exec", "invoke")
    }


@pytest.fixture
def runtime_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("runtime")
    path.chmod(0o755)
    return path


@pytest.fixture
def detection_set(tmp_path: Path) -> Path:
    root = tmp_path / "track1"
    (root / "images").mkdir(parents=True)
    cases = []
    for name in GROUND_TRUTH:
        (root / "images" / name).write_bytes(b"II*\x00" + b"\x00" * 64)
        cases.append({"name": name, "image": f"images/{name}", "width": 100, "height": 100, "spacing_mm": 0.01})
    (root / "manifest.json").write_text(json.dumps({"format_version": 1, "name": "t1", "cases": cases}))
    return root


def runner(runtime_dir: Path, **overrides: object) -> ContainerRunner:
    values: dict[str, object] = {
        "backend": "podman",
        "runtime_dir": runtime_dir,
        "case_seconds": 60.0,
        "memory_bytes": 512 * 1024**2,
        "cpus": 1.0,
        "pids": 64,
        "tmp_bytes": 16 * 1024**2,
        "home_bytes": 64 * 1024**2,
        "ml_scratch_bytes": 16 * 1024**2,
        "model_scratch_bytes": 16 * 1024**2,
        "output_bytes": 1024**2,
        "gpu": "none",
        "userns_base": USERNS_BASE,
        "health_seconds": 60.0,
        # Removed after each run: tests leave no image behind (the reuse test asks for reuse itself).
        "keep_images": 0,
    }
    values.update(overrides)
    return ContainerRunner(ContainerSettings(**values))  # type: ignore[arg-type]


def request(archive: Path, test_set: Path, out: Path, evaluation_id: int, **fields: object) -> RunRequest:
    cases = tuple(json.loads((test_set / "manifest.json").read_text())["cases"][i]["name"] for i in range(2))
    if "stack" in cases[0]:
        cases = tuple(STACKS)
    values: dict[str, object] = {
        "evaluation_id": evaluation_id,
        "kind": "container",
        "artifact": archive,
        "test_set_dir": test_set,
        "cases": cases,
        "output_dir": out,
        "timeout_s": 240.0,
    }
    values.update(fields)
    return RunRequest(**values)  # type: ignore[arg-type]


def model_tarball(path: Path, weights: dict[str, object]) -> Path:
    data = json.dumps(weights).encode()
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("./weights.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


def test_the_image_user_is_resolved_from_the_image(archives: dict[str, Path]) -> None:
    user = validate_image_archive(archives["exec"]).run_user
    assert user.name == "user"
    assert user.home == "/home/user"
    assert 0 < user.uid < 1000  # useradd -r: a system uid (999 on a fresh Debian)


@pytest.mark.parametrize("mode", ["exec", "invoke"])
def test_track1_reference_image_scores(
    archives: dict[str, Path], detection_set: Path, runtime_dir: Path, tmp_path: Path, mode: str
) -> None:
    out = tmp_path / "out"
    output = runner(runtime_dir).run(request(archives[mode], detection_set, out, 9700, run_mode=mode))
    gt = GroundTruth(cases={k: np.array(v) for k, v in GROUND_TRUTH.items()}, labels={})
    report = evaluate(gt, read_predictions(output))
    assert (report.overall.tp, report.overall.fp, report.overall.fn) == (2, 1, 1)
    log = (out / LOGS_DIR / "001.tiff.log").read_text()
    uid = validate_image_archive(archives[mode]).run_user.uid
    assert f"handler track1 user {uid} home /home/user" in log
    assert (out / LOGS_DIR / "002.tiff.log").is_file()
    assert not image_exists(validate_image_archive(archives[mode]).image_id)


@pytest.mark.parametrize("mode", ["exec", "invoke"])
def test_track2_reference_image_scores(archives: dict[str, Path], runtime_dir: Path, tmp_path: Path, mode: str) -> None:
    stack_set = write_classification_set(tmp_path / "track2")
    output = runner(runtime_dir).run(
        request(archives[mode], stack_set, tmp_path / "out", 9710, run_mode=mode, task="classification")
    )
    patches = {name: len(labels) for name, (_domain, labels) in STACKS.items()}
    report = evaluate_classification(
        read_ground_truth(stack_set / "ground-truth" / "ground-truth.json"), read_stack_predictions(output, patches)
    )
    # One normal page of stack_1 called atypical: one false positive, nothing else wrong.
    assert (report.overall.tp, report.overall.fp, report.overall.fn) == (5, 1, 0)


def test_invoke_mode_loads_the_model_once(
    archives: dict[str, Path], detection_set: Path, runtime_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    runner(runtime_dir).run(request(archives["invoke"], detection_set, out, 9720, run_mode="invoke"))
    # One server process served both cases: its call counter went on from 1 to 2.
    assert "invoke 1" in (out / LOGS_DIR / "001.tiff.log").read_text()
    assert "invoke 2" in (out / LOGS_DIR / "002.tiff.log").read_text()


def test_model_tarball_replaces_the_images_weights(
    archives: dict[str, Path], detection_set: Path, runtime_dir: Path, tmp_path: Path
) -> None:
    tarball = model_tarball(tmp_path / "model.tar.gz", TARBALL_WEIGHTS)
    output = runner(runtime_dir).run(
        request(archives["exec"], detection_set, tmp_path / "out", 9730, model_archive=tarball)
    )
    gt = GroundTruth(cases={k: np.array(v) for k, v in GROUND_TRUTH.items()}, labels={})
    report = evaluate(gt, read_predictions(output))
    assert (report.overall.tp, report.overall.fp, report.overall.fn) == (3, 0, 0)


def test_an_image_already_loaded_is_reused(
    archives: dict[str, Path], detection_set: Path, runtime_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = runner(runtime_dir, keep_images=2)
    image_id = validate_image_archive(archives["exec"]).image_id
    try:
        run.run(request(archives["exec"], detection_set, tmp_path / "a", 9740))
        assert image_exists(image_id)
        with caplog.at_level(logging.INFO, logger="worker.containers.engine"):
            run.run(request(archives["exec"], detection_set, tmp_path / "b", 9741))
    finally:
        run.backend.remove_image(image_id)
    assert "already in the engine: reused" in caplog.text
    assert not image_exists(image_id)


def test_the_host_stays_safe_with_the_images_user(archives: dict[str, Path], runtime_dir: Path, tmp_path: Path) -> None:
    archive = validate_image_archive(archives["exec"])
    uid = archive.run_user.uid
    backend = PodmanBackend(runtime_dir=runtime_dir)
    # The reference image's base (its ENTRYPOINT would not run a shell), as the reference image's user.
    image_id = base_image()
    # Host files the container must never read, even were they mounted into it by mistake: one of host uid
    # `uid` (0600: readable by that host user only), another team's upload and the ground truth (root, 0600).
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    for name, owner in (("same-uid.txt", uid), ("other-team-upload.tar", 0), ("ground-truth.json", 0)):
        (secrets / name).write_text("SECRET")
        os.chown(secrets / name, owner, owner)
        (secrets / name).chmod(0o600)
    secrets.chmod(0o755)
    script = (
        "id -u > /output/uid; touch /output/written; sleep 3; "
        "for f in /secrets/*; do cat $f >> /output/leaked 2>/dev/null && echo $f >> /output/read; done; true"
    )
    spec = SandboxSpec(
        label=f"safety-{os.getpid()}",
        image=image_id,
        wall_seconds=60,
        uid=uid,
        gid=archive.run_user.gid,
        userns_base=USERNS_BASE,
        mounts=(Mount(secrets, "/secrets"),),
        memory_bytes=256 * 1024**2,
        pids=32,
        workdir=None,
        base_env=False,
    )
    seen: dict[str, list[int]] = {}

    def watch() -> None:
        # Only this container's processes (its cgroup): other software on the host may run as uid `uid`.
        time.sleep(1.5)
        ids = backend.list_containers(spec.label)
        seen["mapped"] = label_processes(USERNS_BASE + uid, spec.label, ids)
        seen["plain"] = label_processes(uid, spec.label, ids)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = backend.run(spec, ["sh", "-c", script], output_dir=tmp_path / "out")
    finally:
        watcher.join()
    assert result.exit_code == 0, result.stderr_tail
    assert (tmp_path / "out" / "uid").read_text().strip() == str(uid)
    assert seen["mapped"], "the container's process should run as a host id of the unprivileged range"
    assert seen["plain"] == [], f"host processes with uid {uid}: {seen['plain']}"
    assert not (tmp_path / "out" / "read").exists()
    assert not (tmp_path / "out" / "leaked").exists() or "SECRET" not in (tmp_path / "out" / "leaked").read_text()


def test_files_written_by_the_container_belong_to_the_unprivileged_range(
    archives: dict[str, Path], runtime_dir: Path, tmp_path: Path
) -> None:
    archive = validate_image_archive(archives["exec"])
    backend = PodmanBackend(runtime_dir=runtime_dir)
    image_id = base_image()
    spec = SandboxSpec(
        label=f"owner-{os.getpid()}",
        image=image_id,
        wall_seconds=60,
        uid=archive.run_user.uid,
        gid=archive.run_user.gid,
        userns_base=USERNS_BASE,
        workdir=None,
        base_env=False,
    )
    seen: list[tuple[int, int]] = []

    def watch() -> None:
        # The output area while the container runs (the copy handed back is the worker's own).
        for _ in range(50):
            for area in (runtime_dir / "podman" / spec.label).glob("*/output/written"):
                info = area.stat()
                seen.append((info.st_uid, info.st_gid))
                return
            time.sleep(0.1)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        backend.run(spec, ["sh", "-c", "touch /output/written; sleep 3"], output_dir=tmp_path / "out")
    finally:
        watcher.join()
    uid, gid = archive.run_user.uid, archive.run_user.gid
    assert seen == [(USERNS_BASE + uid, USERNS_BASE + gid)]


FAILING = {
    "module": '#!/bin/sh\necho "Traceback (most recent call last):" >&2\n'
    "echo \"ModuleNotFoundError: No module named 'timm'\" >&2\nexit 1\n",
    "sleeper": "#!/bin/sh\nsleep 600\n",
}


@pytest.fixture(scope="module")
def failing_archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    require_backend("podman")
    workdir = tmp_path_factory.mktemp("failing")
    made = {}
    for name, script in FAILING.items():
        tag = build_image(
            f"localhost/midog-test/failing-{name}",
            'USER 10001:10001\nENTRYPOINT ["/bin/sh", "/app/run.sh"]\n',
            {"app/run.sh": script.encode()},
            workdir,
        )
        made[name] = workdir / f"{name}.tar"
        subprocess.run(["podman", "save", "-q", "-o", str(made[name]), tag], check=True, capture_output=True)
        subprocess.run(["podman", "rmi", "-f", tag], check=True, capture_output=True)
    return made


@pytest.mark.parametrize("mode", ["exec", "invoke"])
def test_missing_module_is_named_only_where_logs_are_shown(
    failing_archives: dict[str, Path], detection_set: Path, runtime_dir: Path, tmp_path: Path, mode: str
) -> None:
    run = runner(runtime_dir, health_seconds=20.0)
    archive = failing_archives["module"]
    with pytest.raises(SubmissionError) as hidden:
        run.run(request(archive, detection_set, tmp_path / "h", 9750, run_mode=mode))
    line = str(hidden.value)
    assert "ModuleNotFoundError" in line
    assert "timm" not in line
    assert "001" not in line
    with pytest.raises(SubmissionError) as shown:
        run.run(request(archive, detection_set, tmp_path / "s", 9751, run_mode=mode, show_logs=True))
    assert "No module named 'timm'" in str(shown.value)
    assert "timm" in (tmp_path / "s" / LOGS_DIR / "001.tiff.log").read_text()


def test_a_server_that_never_becomes_healthy_fails_with_a_clear_line(
    failing_archives: dict[str, Path], detection_set: Path, runtime_dir: Path, tmp_path: Path
) -> None:
    started = time.monotonic()
    with pytest.raises(SubmissionError) as caught:
        runner(runtime_dir, health_seconds=3.0).run(
            request(failing_archives["sleeper"], detection_set, tmp_path / "o", 9760, run_mode="invoke")
        )
    assert str(caught.value) == NEVER_HEALTHY
    assert time.monotonic() - started < 120


# Healthy at once, but its /invoke never answers: the per-case limit ends it.
STUCK_SERVER = """import http.server, time


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()

    def do_POST(self):
        time.sleep(3600)


http.server.ThreadingHTTPServer(("127.0.0.1", 4743), Handler).serve_forever()
"""


def test_an_invoke_that_outlasts_the_case_limit_is_a_time_limit(
    detection_set: Path, runtime_dir: Path, tmp_path: Path
) -> None:
    require_backend("podman")
    archive = build_reference_image(tmp_path, mode="invoke", weights={}, name="stuck", server=STUCK_SERVER)
    started = time.monotonic()
    with pytest.raises(SubmissionError) as caught:
        runner(runtime_dir, case_seconds=3.0).run(
            request(archive, detection_set, tmp_path / "o", 9770, run_mode="invoke")
        )
    assert str(caught.value) == "time limit exceeded"
    assert time.monotonic() - started < 120
