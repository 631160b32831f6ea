"""Container submissions end to end through podman: validate, load, run per case, score; and the failures.

Each image is built here FROM scratch over a busybox rootfs (no registry), saved with `podman save`, and
removed again, so the runner really loads the archive it is given. The scripts are the containers'
programs: they read the grand-challenge input path and write /output/mitotic-figures.json.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest

from tests.sandbox.images import build_image, image_exists, require_backend
from worker.containers.contract import input_path
from worker.containers.image_archive import validate_image_archive
from worker.containers.runner import ContainerRunner, ContainerSettings
from worker.errors import SubmissionError
from worker.evaluation.io import read_predictions
from worker.evaluation.metrics import evaluate
from worker.evaluation.types import GroundTruth
from worker.runners import RunRequest
from worker.sandbox.podman import LABEL_KEY

LEAK = "HIDDEN-IMAGE-CONTENT-4242"

GOOD = r"""#!/bin/sh
dir=/input/images/histopathology-roi-cropout
[ -d /input/images ] || dir=/input
n=0
for f in "$dir"/*.tiff; do
  [ "$(head -c 2 "$f")" = "II" ] || exit 5
  n=$((n+1))
  name=$(basename "$f")
done
[ "$n" = 1 ] || exit 6
case "$name" in
  001.tiff) pts='{"name":"mitotic figure","point":[0.1,0.1,0],"probability":0.9},{"name":"mitotic figure","point":[0.5,0.5,0],"probability":0.8}' ;;
  002.tiff) pts='{"name":"mitotic figure","point":[0.2,0.3,0],"probability":0.7},{"name":"non-mitotic figure","point":[0.9,0.9,0],"probability":0.2}' ;;
  *) exit 7 ;;
esac
printf '{"type":"Multiple points","points":[%s],"version":{"major":1,"minor":0}}' "$pts" > /output/mitotic-figures.json
"""
MALFORMED = f"""#!/bin/sh
echo "{LEAK}" >&2
printf '{{"type":"Multiple points","points":[{{"point":[0.1,' > /output/mitotic-figures.json
"""
MEMORY = f"""#!/bin/sh
echo "{LEAK}" >&2
x=0123456789abcdef
while :; do x="$x$x"; done
"""
EXIT_CODE = f"""#!/bin/sh
echo "{LEAK}" >&2
exit 42
"""
# Copies hidden image content into a field that the parser rejects, hoping the error message shows it.
SMUGGLER = r"""#!/bin/sh
f=$(ls /input/images/histopathology-roi-cropout/*.tiff)
leak=$(head -c 29 "$f" | tail -c 25)
printf '{"type":"%s","points":[]}' "$leak" > /output/mitotic-figures.json
"""
SLEEPER = f"""#!/bin/sh
echo "{LEAK}" >&2
sleep 600
"""

# Succeeds (one detection) only when its memory cgroup (v2, else v1) grants exactly 96 MiB.
MEMORY_PROBE = r"""#!/bin/sh
limit=$(cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes)
[ "$limit" = "100663296" ] || exit 3
printf '{"type":"Multiple points","points":[{"point":[0.1,0.1,0],"probability":0.9}],"version":{"major":1,"minor":0}}' \
  > /output/mitotic-figures.json
"""

GROUND_TRUTH = {"001.tiff": [[0.1, 0.1, 0.0], [0.3, 0.3, 0.0]], "002.tiff": [[0.2, 0.3, 0.0]]}


@pytest.fixture(scope="module")
def podman() -> None:
    require_backend("podman")


@pytest.fixture
def runtime_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("runtime")
    path.chmod(0o755)
    return path


@pytest.fixture
def test_set(tmp_path: Path) -> Path:
    root = tmp_path / "set"
    (root / "images").mkdir(parents=True)
    cases = []
    for name in GROUND_TRUTH:
        (root / "images" / name).write_bytes(b"II*\x00" + LEAK.encode() + b"\x00" * 64)
        cases.append({"name": name, "image": f"images/{name}", "width": 100, "height": 100, "spacing_mm": 0.01})
    (root / "manifest.json").write_text(json.dumps({"format_version": 1, "name": "t", "cases": cases}))
    return root


@pytest.fixture(scope="module")
def container_archive(podman: None, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], Path]:
    """Script -> `podman save` archive of an image running it as a non-root USER; the image is not kept.

    Archives are built once per module; each run loads its archive afresh (the runner removes the image).
    """
    workdir = tmp_path_factory.mktemp("archives")
    built: dict[str, Path] = {}

    def make(script: str, name: str) -> Path:
        if name in built:
            return built[name]
        tag = build_image(
            f"localhost/midog-test/{name}",
            'USER 10001:10001\nENTRYPOINT ["/bin/sh", "/app/run.sh"]\n',
            {"app/run.sh": script.encode()},
            workdir,
        )
        archive = workdir / f"{name}.tar"
        subprocess.run(["podman", "save", "-q", "-o", str(archive), tag], check=True, capture_output=True)
        subprocess.run(["podman", "rmi", "-f", tag], check=True, capture_output=True)
        built[name] = archive
        return archive

    return make


def runner(runtime_dir: Path, **overrides: object) -> ContainerRunner:
    values: dict[str, object] = {
        "backend": "podman",
        "runtime_dir": runtime_dir,
        "case_seconds": 20.0,
        "memory_bytes": 64 * 1024**2,
        "cpus": 1.0,
        "pids": 64,
        "shm_bytes": 16 * 1024**2,
        "tmp_bytes": 16 * 1024**2,
        "output_bytes": 1024**2,
        "gpu": "none",
        # Removed after each run, so every test loads its archive afresh.
        "keep_images": 0,
    }
    values.update(overrides)
    return ContainerRunner(ContainerSettings(**values))  # type: ignore[arg-type]


@dataclass(frozen=True)
class PhaseRunRequest(RunRequest):
    """RunRequest plus the per-phase attributes ContainerRunner reads when present."""

    hidden: bool = True
    input_layout: str | None = None


def request(
    archive: Path, test_set: Path, tmp_path: Path, evaluation_id: int, *, hidden: bool = True, timeout_s: float = 60.0
) -> PhaseRunRequest:
    return PhaseRunRequest(
        evaluation_id=evaluation_id,
        kind="container",
        artifact=archive,
        test_set_dir=test_set,
        cases=tuple(GROUND_TRUTH),
        output_dir=tmp_path / "predictions",
        timeout_s=timeout_s,
        hidden=hidden,
    )


def leftovers(evaluation_id: int) -> list[str]:
    found = []
    for label in (f"{LABEL_KEY}=eval-{evaluation_id}", f"midog.evaluation={evaluation_id}"):
        done = subprocess.run(
            ["podman", "ps", "-a", "-q", "--filter", f"label={label}"], capture_output=True, text=True, check=True
        )
        found += done.stdout.split()
    return found


def test_input_paths_of_both_layouts() -> None:
    assert input_path("001.tiff", "2022") == "/input/images/histopathology-roi-cropout/001.tiff"
    assert input_path("001.tiff", "2021") == "/input/001.tiff"


@pytest.mark.parametrize("layout", ["2022", "2021"])
def test_container_detections_are_scored(
    container_archive: Callable[[str, str], Path], test_set: Path, tmp_path: Path, runtime_dir: Path, layout: str
) -> None:
    archive = container_archive(GOOD, "good")
    image_id = validate_image_archive(archive).image_id
    evaluation_id = 9100 + int(layout == "2021")
    output = runner(runtime_dir, layout=layout).run(request(archive, test_set, tmp_path, evaluation_id))

    predictions = read_predictions(output)
    assert sorted(predictions) == ["001.tiff", "002.tiff"]
    gt = GroundTruth(cases={k: np.array(v) for k, v in GROUND_TRUTH.items()}, labels={})
    report = evaluate(gt, predictions)
    # 001: (0.1, 0.1) hits, (0.5, 0.5) is a false positive, (0.3, 0.3) is missed; 002: (0.2, 0.3) hits and
    # the "non-mitotic figure" at (0.9, 0.9) is not a detection.
    assert (report.overall.tp, report.overall.fp, report.overall.fn) == (2, 1, 1)
    assert report.overall.f1 == pytest.approx(2 / 3)
    assert leftovers(evaluation_id) == []
    assert not image_exists(image_id)


@pytest.mark.parametrize(
    ("script", "name", "settings", "hidden_reason", "public_reason"),
    [
        (
            MALFORMED,
            "malformed",
            {},
            "invalid /output/mitotic-figures.json",
            "case 001.tiff: invalid /output/mitotic-figures.json: invalid JSON at line 1",
        ),
        (MEMORY, "memory", {}, "memory limit exceeded", "case 001.tiff: memory limit exceeded"),
        (SLEEPER, "sleeper", {"case_seconds": 2.0}, "time limit exceeded", "case 001.tiff: time limit exceeded"),
        (EXIT_CODE, "exitcode", {}, "the program failed", "case 001.tiff: the program exited with status 42"),
        (
            SMUGGLER,
            "smuggler",
            {},
            "invalid /output/mitotic-figures.json",
            f"case 001.tiff: invalid /output/mitotic-figures.json: type must be \"Multiple points\", got '{LEAK}'",
        ),
    ],
    ids=["malformed-json", "memory-hog", "sleeps-past-limit", "exit-status", "field-smuggling"],
)
@pytest.mark.parametrize("hidden", [True, False], ids=["hidden", "public"])
def test_failing_containers_end_with_one_line(
    container_archive: Callable[[str, str], Path],
    test_set: Path,
    tmp_path: Path,
    runtime_dir: Path,
    script: str,
    name: str,
    settings: dict[str, object],
    hidden_reason: str,
    public_reason: str,
    hidden: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    archive = container_archive(script, name)
    image_id = validate_image_archive(archive).image_id
    evaluation_id = 9200 + len(name)
    # The engine's helper (conmon) leaves an empty `oom` file in its working directory after an OOM kill: the
    # runner must give it the run's own directory, never the worker's (here a directory of this test's).
    worker_cwd = tmp_path / "cwd"
    worker_cwd.mkdir()
    monkeypatch.chdir(worker_cwd)
    with pytest.raises(SubmissionError) as caught:
        runner(runtime_dir, **settings).run(request(archive, test_set, tmp_path, evaluation_id, hidden=hidden))
    assert list(worker_cwd.iterdir()) == []
    message = str(caught.value)
    assert "\n" not in message
    if hidden:
        # Nothing the container chose or read reaches the participant: no logs, field values, exit status.
        assert message == hidden_reason
        assert LEAK not in message
        assert "42" not in message
    else:
        assert message.startswith(public_reason)
    assert leftovers(evaluation_id) == []
    assert not image_exists(image_id)
    assert not (tmp_path / "predictions" / "predictions.json").exists()


def test_the_phases_memory_limit_replaces_the_workers(
    container_archive: Callable[[str, str], Path], test_set: Path, tmp_path: Path, runtime_dir: Path
) -> None:
    """A worker allowing 4 GiB runs a phase limited to 96 MiB under 96 MiB (the container reads its own
    cgroup limit), and a phase without a limit under the worker's."""
    archive = container_archive(MEMORY_PROBE, "memory-probe")
    phase_limited = replace(request(archive, test_set, tmp_path / "phase", 9400), memory_bytes=96 * 1024**2)
    output = runner(runtime_dir, memory_bytes=4 * 1024**3).run(phase_limited)
    assert {name: len(case.points) for name, case in read_predictions(output).items()} == {"001.tiff": 1, "002.tiff": 1}
    worker_limited = request(archive, test_set, tmp_path / "worker", 9401)
    output = runner(runtime_dir, memory_bytes=96 * 1024**2).run(worker_limited)
    assert all(len(case.points) == 1 for case in read_predictions(output).values())
    with pytest.raises(SubmissionError, match="the program failed"):  # the probe refuses any other limit
        runner(runtime_dir, memory_bytes=4 * 1024**3).run(request(archive, test_set, tmp_path / "none", 9402))
    assert leftovers(9400) == leftovers(9401) == leftovers(9402) == []


def test_root_image_is_refused_before_loading(podman: None, tmp_path: Path, test_set: Path, runtime_dir: Path) -> None:
    tag = build_image("localhost/midog-test/rooty", 'ENTRYPOINT ["/bin/sh", "-c", "id"]\n', {}, tmp_path)
    archive = tmp_path / "rooty.tar"
    subprocess.run(["podman", "save", "-q", "-o", str(archive), tag], check=True, capture_output=True)
    subprocess.run(["podman", "rmi", "-f", tag], check=True, capture_output=True)
    with pytest.raises(SubmissionError, match="non-root USER"):
        runner(runtime_dir).run(request(archive, test_set, tmp_path, 9300))
    assert not image_exists(tag)


def test_the_pipeline_builds_the_container_runner_from_its_setting() -> None:
    from app.settings import Settings
    from worker.runners import Runner, load_runner

    settings = Settings(runner_container="worker.containers.runner:ContainerRunner", sandbox_backend="podman")
    runner = load_runner("container", settings)
    assert isinstance(runner, ContainerRunner)
    assert isinstance(runner, Runner)
    assert runner.backend.name == "podman"
