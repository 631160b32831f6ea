"""Container submissions of MIDOG 2025 Track 2 through podman: each stack mounted read-only at the Track 2 input
path, /output/multiple-mitotic-figure-classification.json validated with the scoring core's Track 2 rules, the
outputs scored; and the failures as one line that, in a hidden phase, carries nothing the container chose.

Images are built here FROM scratch over a busybox rootfs and saved with `podman save` (tests/sandbox/images.py).
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from tests.classification_set import STACKS, write_classification_set
from tests.sandbox.images import build_image, image_exists, require_backend
from worker.containers.contract import input_path, output_name
from worker.containers.image_archive import validate_image_archive
from worker.containers.runner import ContainerRunner, ContainerSettings, case_patches
from worker.errors import SubmissionError
from worker.evaluation.classification import evaluate_classification, read_ground_truth, read_predictions
from worker.runners import RunRequest
from worker.sandbox import SandboxError
from worker.sandbox.podman import LABEL_KEY

LEAK = "HIDDEN-STACK-CONTENT-4242"
OUTPUT = "/output/multiple-mitotic-figure-classification.json"

GOOD = r"""#!/bin/sh
[ -e /input/images/histopathology-roi-cropout ] && exit 4
n=0
for f in /input/images/stacked-histopathology-roi-cropouts/*.tiff; do
  [ "$(head -c 2 "$f")" = "II" ] || exit 5
  n=$((n+1))
  name=${f##*/}
done
[ "$n" = 1 ] || exit 6
N='{"class":"normal","confidence":'
A='{"class":"atypical","confidence":'
case "$name" in
  stack_1.tiff) out="[${N}0.1},${A}0.9},${A}0.6},${N}0.2}]" ;;
  stack_2.tiff) out="[${A}0.8},${N}0.4},${N}0.3}]" ;;
  stack_3.tiff) out="[${N}0.2},${N}0.1}]" ;;
  stack_4.tiff) out="[${A}0.7},${N}0.2},${N}0.3},${N}0.1},${A}0.9}]" ;;
  *) exit 7 ;;
esac
printf '%s' "$out" > /output/multiple-mitotic-figure-classification.json
"""
SHORT = """#!/bin/sh
printf '[{"class":"normal","confidence":0.1},{"class":"normal","confidence":0.1},{"class":"normal","confidence":0.1}]' \
  > /output/multiple-mitotic-figure-classification.json
"""
INTEGER = """#!/bin/sh
printf '[{"class":"normal","confidence":1},{"class":"normal","confidence":0.5},{"class":"normal","confidence":0.5},\
{"class":"normal","confidence":0.5}]' > /output/multiple-mitotic-figure-classification.json
"""
# Puts "hidden content" into a field that the reader rejects, hoping the error message shows it.
SMUGGLER = f"""#!/bin/sh
printf '[{{"class":"{LEAK}","confidence":0.5}},{{"class":"normal","confidence":0.5}},\
{{"class":"normal","confidence":0.5}},{{"class":"normal","confidence":0.5}}]' \
  > /output/multiple-mitotic-figure-classification.json
"""
DETECTION_OUTPUT = """#!/bin/sh
printf '{"type":"Multiple points","points":[],"version":{"major":1,"minor":0}}' > /output/mitotic-figures.json
"""


@pytest.fixture(scope="module")
def podman() -> None:
    require_backend("podman")


@pytest.fixture(scope="module")
def container_archive(podman: None, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], Path]:
    """Script -> `podman save` archive of an image running it as a non-root USER; the image is not kept."""
    workdir = tmp_path_factory.mktemp("archives")
    built: dict[str, Path] = {}

    def make(script: str, name: str) -> Path:
        if name not in built:
            tag = build_image(
                f"localhost/midog-test/track2-{name}",
                'USER 10001:10001\nENTRYPOINT ["/bin/sh", "/app/run.sh"]\n',
                {"app/run.sh": script.encode()},
                workdir,
            )
            archive = workdir / f"{name}.tar"
            subprocess.run(["podman", "save", "-q", "-o", str(archive), tag], check=True, capture_output=True)
            subprocess.run(["podman", "rmi", "-f", tag], check=True, capture_output=True)
            built[name] = archive
        return built[name]

    return make


@pytest.fixture
def stack_set(tmp_path: Path) -> Path:
    return write_classification_set(tmp_path / "track2")


@pytest.fixture
def runtime_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("runtime")
    path.chmod(0o755)
    return path


def _runner(runtime_dir: Path) -> ContainerRunner:
    settings = ContainerSettings(
        backend="podman",
        runtime_dir=runtime_dir,
        case_seconds=20.0,
        memory_bytes=64 * 1024**2,
        cpus=1.0,
        pids=64,
        shm_bytes=16 * 1024**2,
        tmp_bytes=16 * 1024**2,
        output_bytes=1024**2,
        gpu="none",
        keep_images=0,
    )
    return ContainerRunner(settings)


def _request(archive: Path, stack_set: Path, out: Path, evaluation_id: int, *, hidden: bool = True) -> RunRequest:
    return RunRequest(
        evaluation_id=evaluation_id,
        kind="container",
        artifact=archive,
        test_set_dir=stack_set,
        cases=tuple(STACKS),
        output_dir=out,
        timeout_s=120.0,
        hidden=hidden,
        task="classification",
    )


def _leftovers(evaluation_id: int) -> list[str]:
    found = []
    for label in (f"{LABEL_KEY}=eval-{evaluation_id}", f"midog.evaluation={evaluation_id}"):
        done = subprocess.run(
            ["podman", "ps", "-a", "-q", "--filter", f"label={label}"], capture_output=True, text=True, check=True
        )
        found += done.stdout.split()
    return found


def test_the_track2_paths() -> None:
    assert input_path("stack_1.tiff", "2022", "classification") == (
        "/input/images/stacked-histopathology-roi-cropouts/stack_1.tiff"
    )
    assert input_path("stack_1.tiff", "2021", "classification") == input_path("stack_1.tiff", "2022", "classification")
    assert input_path("001.tiff", "2022") == "/input/images/histopathology-roi-cropout/001.tiff"
    assert f"/output/{output_name('classification')}" == OUTPUT
    assert output_name("detection") == "mitotic-figures.json"


def test_patch_counts_come_from_the_test_set(stack_set: Path) -> None:
    assert case_patches(stack_set, ("stack_4.tiff", "stack_3.tiff")) == {"stack_4.tiff": 5, "stack_3.tiff": 2}
    with pytest.raises(SandboxError, match="'stack_9.tiff' has no patch count"):
        case_patches(stack_set, ("stack_9.tiff",))


def test_container_classifications_are_scored(
    container_archive: Callable[[str, str], Path], stack_set: Path, tmp_path: Path, runtime_dir: Path
) -> None:
    archive = container_archive(GOOD, "good")
    image_id = validate_image_archive(archive).image_id
    output = _runner(runtime_dir).run(_request(archive, stack_set, tmp_path / "out", 9500))
    patches = {name: len(labels) for name, (_domain, labels) in STACKS.items()}
    predictions = read_predictions(output, patches)
    assert predictions["stack_4.tiff"].classes.tolist() == [1, 0, 0, 0, 1]
    report = evaluate_classification(read_ground_truth(stack_set / "ground-truth" / "ground-truth.json"), predictions)
    overall = report.overall
    # stack_1: one false positive (page 2); stack_2: one atypical figure missed (page 1); all else right.
    assert (overall.tp, overall.fp, overall.fn, overall.tn) == (4, 1, 1, 8)
    assert overall.balanced_accuracy == pytest.approx((4 / 5 + 8 / 9) / 2)
    assert _leftovers(9500) == []
    assert not image_exists(image_id)


@pytest.mark.parametrize(
    ("script", "name", "hidden_reason", "public_reason"),
    [
        (
            SHORT,
            "short",
            f"invalid {OUTPUT}",
            f"case stack_1.tiff: invalid {OUTPUT}: stack_1.tiff: 3 outputs for 4 patches",
        ),
        (
            INTEGER,
            "integer",
            f"invalid {OUTPUT}",
            f"case stack_1.tiff: invalid {OUTPUT}: stack_1.tiff[0]: confidence must be a float (JSON 1 is not",
        ),
        (
            SMUGGLER,
            "smuggler",
            f"invalid {OUTPUT}",
            f"case stack_1.tiff: invalid {OUTPUT}: stack_1.tiff[0]: class must be 'normal' or 'atypical', got '{LEAK}'",
        ),
        (DETECTION_OUTPUT, "detection-output", f"no {OUTPUT} was written", f"case stack_1.tiff: no {OUTPUT} was"),
    ],
    ids=["one-item-short", "integer-confidence", "field-smuggling", "detection-output"],
)
@pytest.mark.parametrize("hidden", [True, False], ids=["hidden", "public"])
def test_failing_track2_containers_end_with_one_line(
    container_archive: Callable[[str, str], Path],
    stack_set: Path,
    tmp_path: Path,
    runtime_dir: Path,
    script: str,
    name: str,
    hidden_reason: str,
    public_reason: str,
    hidden: bool,
) -> None:
    archive = container_archive(script, name)
    image_id = validate_image_archive(archive).image_id
    evaluation_id = 9600 + len(name) + 50 * hidden
    with pytest.raises(SubmissionError) as caught:
        _runner(runtime_dir).run(_request(archive, stack_set, tmp_path / "out", evaluation_id, hidden=hidden))
    message = str(caught.value)
    assert "\n" not in message
    if hidden:
        assert message == hidden_reason
        assert LEAK not in message
        assert "stack_1" not in message
    else:
        assert message.startswith(public_reason)
    assert _leftovers(evaluation_id) == []
    assert not image_exists(image_id)
    assert not (tmp_path / "out" / "predictions.json").exists()


def test_a_stack_without_a_patch_count_is_an_infrastructure_fault(
    container_archive: Callable[[str, str], Path], stack_set: Path, tmp_path: Path, runtime_dir: Path
) -> None:
    archive = container_archive(GOOD, "good")
    request = replace(_request(archive, stack_set, tmp_path / "out", 9700), cases=("stack_1.tiff",))
    manifest = stack_set / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"patches": 4', '"patches": null'))
    with pytest.raises(SandboxError, match="has no patch count"):
        _runner(runtime_dir).run(request)
