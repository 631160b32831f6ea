"""ModelArchiveRunner for classification phases (MIDOG 2025 Track 2): what reaches the sandbox (a recording
backend: only the requested stacks, the set's task and patch counts), archives of the other task refused
before anything runs with one line, and a toy classifier in the real bwrap sandbox giving its direct run's
outputs, which the pipeline reads and scores."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.classification_set import STACKS, outputs, write_classification_set, write_toy_classifier
from tests.integration.conftest import REPO_ROOT, require_bwrap
from worker.errors import SubmissionError
from worker.evaluation.classification import read_predictions
from worker.model_runner import ModelArchiveRunner, ModelSettings
from worker.pipeline import PipelineInput, open_test_set, predict_stacks, score_stacks
from worker.reference.export import zip_archive
from worker.runners import RunRequest
from worker.sandbox import SandboxResult, SandboxSpec

PATCHES = {name: len(labels) for name, (_domain, labels) in STACKS.items()}
TASK_LINE = (
    "manifest.json: task: the archive is a detection model, but a classification phase needs a classifier "
    '(manifest "task": "classification")'
)


@pytest.fixture
def stack_set(tmp_path: Path) -> Path:
    return write_classification_set(tmp_path / "track2")


@pytest.fixture
def toy_zip(tmp_path: Path) -> Path:
    return zip_archive(write_toy_classifier(tmp_path / "toy"), tmp_path / "toy.zip")


def _request(artifact: Path, test_set: Path, out: Path, cases: Sequence[str], **extra: Any) -> RunRequest:
    return RunRequest(
        evaluation_id=8,
        kind="model",
        artifact=artifact,
        test_set_dir=test_set,
        cases=tuple(cases),
        output_dir=out,
        timeout_s=extra.pop("timeout_s", 120.0),
        task=extra.pop("task", "classification"),
        **extra,
    )


@dataclass
class RecordingBackend:
    """Records what the sandbox would get; writes the made-up classifier's outputs of the listed stacks."""

    name: str = "bwrap"
    calls: list[tuple[SandboxSpec, list[str], dict[str, Any]]] = field(default_factory=list)

    def check(self) -> None:
        return None

    def run(self, spec: SandboxSpec, argv: Sequence[str], *, output_dir: Path) -> SandboxResult:
        manifest = next(m.source for m in spec.mounts if m.target == "/input/manifest.json")
        listed = json.loads(manifest.read_text())
        self.calls.append((spec, list(argv), listed))
        out = output_dir / "predictions"
        out.mkdir(parents=True)
        for case in listed["cases"]:
            (out / Path(case["name"]).with_suffix(".json").name).write_text(json.dumps(outputs()[case["name"]]))
        (output_dir / "stats.json").write_text(json.dumps({"device": "cpu", "patches_per_second": 1.0}))
        return SandboxResult(0, False, False, False, 1.0, output_dir)

    def reap(self, label: str) -> int:
        return 0

    def leftover_labels(self) -> list[str]:
        return []


def _recording_runner(backend: RecordingBackend) -> ModelArchiveRunner:
    runner = ModelArchiveRunner(ModelSettings(gpu="none"))
    runner.backend = backend
    return runner


def test_only_the_requested_stacks_reach_the_sandbox_with_their_task_and_patch_counts(
    stack_set: Path, toy_zip: Path, tmp_path: Path
) -> None:
    backend = RecordingBackend()
    wanted = ["stack_2.tiff", "stack_4.tiff"]
    produced = _recording_runner(backend).run(_request(toy_zip, stack_set, tmp_path / "out", wanted))
    spec, argv, listed = backend.calls[0]
    assert listed["task"] == "classification"
    assert [(case["name"], case["patches"]) for case in listed["cases"]] == [(n, PATCHES[n]) for n in wanted]
    assert {m.target: m.source for m in spec.mounts}["/input/images"] == stack_set / "images"
    assert "ground-truth" not in json.dumps(listed)
    assert argv[argv.index("--output") + 1] == "/output/predictions"
    assert sorted(read_predictions(produced, {n: PATCHES[n] for n in wanted})) == wanted


@pytest.mark.parametrize("hidden", [True, False], ids=["hidden", "public"])
def test_a_detector_in_a_classification_phase_fails_with_one_line_before_the_sandbox(
    stack_set: Path, reference_cnn_zip: Path, tmp_path: Path, hidden: bool
) -> None:
    backend = RecordingBackend()
    with pytest.raises(SubmissionError) as caught:
        _recording_runner(backend).run(
            _request(reference_cnn_zip, stack_set, tmp_path / "o", list(PATCHES), hidden=hidden)
        )
    assert str(caught.value) == TASK_LINE
    assert backend.calls == []


def test_a_classifier_in_a_detection_phase_fails_with_one_line_before_the_sandbox(
    tiny_set: Path, toy_zip: Path, tmp_path: Path
) -> None:
    backend = RecordingBackend()
    cases = [c["name"] for c in json.loads((tiny_set / "manifest.json").read_text())["cases"]]
    with pytest.raises(SubmissionError, match=r"^manifest.json: task: the archive is a classification model, but a"):
        _recording_runner(backend).run(_request(toy_zip, tiny_set, tmp_path / "o", cases[:1], task="detection"))
    assert backend.calls == []


# --- the real sandbox ------------------------------------------------------------------------------------


def _direct_run(archive: Path, test_set: Path, out: Path) -> None:
    done = subprocess.run(
        [
            *(sys.executable, "-m", "worker.inference.run", "--archive", str(archive)),
            *("--images", str(test_set), "--output", str(out), "--device", "cpu"),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.slow
def test_a_classifier_in_the_sandbox_gives_its_direct_runs_outputs_and_is_scored(
    stack_set: Path, toy_zip: Path, sandbox_runtime_dir: Path, tmp_path: Path
) -> None:
    require_bwrap()
    runner = ModelArchiveRunner(ModelSettings(runtime_dir=sandbox_runtime_dir, cpus=1, gpu="none"))
    inp = PipelineInput(
        evaluation_id=9,
        kind="model",
        artifact=toy_zip,
        test_set_dir=stack_set,
        work_dir=tmp_path / "work",
        timeout_s=120.0,
        task="classification",
    )
    test_set = open_test_set(stack_set)
    predicted = predict_stacks(inp, test_set, runner_for=lambda _kind: runner)
    _direct_run(toy_zip, stack_set, tmp_path / "direct")
    direct = read_predictions(tmp_path / "direct", PATCHES)
    assert sorted(predicted) == sorted(PATCHES)
    for name in PATCHES:
        assert predicted[name].classes.tolist() == direct[name].classes.tolist()
        assert predicted[name].confidences.tolist() == direct[name].confidences.tolist()
    classes = {c for p in predicted.values() for c in p.classes.tolist()}
    assert classes == {0, 1}, "the toy classifier said one class only: the comparison would be weak"
    outcome = score_stacks(inp, test_set, predicted)
    assert outcome.balanced_accuracy is not None
    assert outcome.aggregates["overall_balanced_accuracy"] == outcome.balanced_accuracy
    assert not list((sandbox_runtime_dir / "bwrap").glob("*/*")), "the run left state behind"


@pytest.mark.slow
def test_a_classifier_with_the_wrong_output_shape_is_explained_in_a_public_phase_only(
    stack_set: Path, sandbox_runtime_dir: Path, tmp_path: Path
) -> None:
    require_bwrap()
    broken = zip_archive(write_toy_classifier(tmp_path / "broken", columns=3), tmp_path / "broken.zip")
    runner = ModelArchiveRunner(ModelSettings(runtime_dir=sandbox_runtime_dir, cpus=1, gpu="none"))
    cases = list(PATCHES)[:1]
    with pytest.raises(SubmissionError, match="^the program failed$"):
        runner.run(_request(broken, stack_set, tmp_path / "h", cases))
    with pytest.raises(SubmissionError) as caught:
        runner.run(_request(broken, stack_set, tmp_path / "p", cases, hidden=False))
    expected = "model output: expected (4,) or (4, 1) for output.kind 'binary', got (4, 3)"
    assert str(caught.value) == f"the model archive could not be run: {expected}"
