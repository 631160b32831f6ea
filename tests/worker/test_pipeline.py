"""The pipeline without Celery or a database: predictions files, runners, shards, and the process guard."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from worker.errors import SubmissionError
from worker.evaluation.types import CasePredictions
from worker.pipeline import (
    PipelineInput,
    merge_shards,
    open_test_set,
    predict,
    predictions_from_json,
    predictions_to_json,
    run_pipeline,
    score,
    shard_plan,
)
from worker.runners import ReplayRunner, Runner, RunnerNotConfiguredError, load_runner, run_bounded


def _input(small: Any, artifact: Path, tmp_path: Path, kind: str = "predictions") -> PipelineInput:
    return PipelineInput(
        evaluation_id=1,
        kind=kind,
        artifact=artifact,
        test_set_dir=small.root,
        work_dir=tmp_path / "work",
        timeout_s=5.0,
    )


def _multiple_points(points: list[list[float]], probability: float = 0.9) -> dict[str, Any]:
    return {
        "type": "Multiple points",
        "points": [{"point": p, "probability": probability, "name": "mitotic figure"} for p in points],
    }


def _write(path: Path, obj: Any) -> Path:
    path.write_text(json.dumps(obj))
    return path


def _replay(_kind: str) -> Runner:
    return ReplayRunner()


def test_perfect_predictions_plus_two_far_false_positives(small_set: Any, tmp_path: Path) -> None:
    predictions = {name: _multiple_points(points) for name, points in small_set.ground_truth.items()}
    first = next(iter(predictions))
    predictions[first]["points"] += [
        {"point": [0.01, 0.01, 0.0], "probability": 0.2},
        {"point": [0.02, 0.36, 0.0], "probability": 0.1},
    ]
    total = sum(len(p) for p in small_set.ground_truth.values())

    outcome = run_pipeline(_input(small_set, _write(tmp_path / "p.json", predictions), tmp_path))

    assert (outcome.tp, outcome.fp, outcome.fn) == (total, 2, 0)
    assert outcome.recall == pytest.approx(1.0)
    assert outcome.precision == pytest.approx(total / (total + 2), rel=1e-6)
    assert set(outcome.groups) == {"Scanner A", "Scanner B", "Scanner C"}
    assert sum(g["tp"] for g in outcome.groups.values()) == total
    assert outcome.cases[first] == {"tp": len(small_set.ground_truth[first]), "fp": 2, "fn": 0}


def test_an_empty_case_counts_every_figure_as_missed(small_set: Any, tmp_path: Path) -> None:
    predictions = {name: _multiple_points(points) for name, points in small_set.ground_truth.items()}
    emptied = sorted(predictions)[-1]
    predictions[emptied] = _multiple_points([])

    outcome = run_pipeline(_input(small_set, _write(tmp_path / "p.json", predictions), tmp_path))

    assert outcome.fn == len(small_set.ground_truth[emptied])
    assert outcome.cases[emptied] == {"tp": 0, "fp": 0, "fn": len(small_set.ground_truth[emptied])}


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda p: p.pop(sorted(p)[0]), "missing predictions"),
        (lambda p: p.__setitem__("999.tiff", _multiple_points([])), "unknown image"),
        (lambda p: p[sorted(p)[0]]["points"].append({"point": [9.0, 0.1, 0.0]}), "point"),
        (lambda p: p[sorted(p)[0]]["points"].append({"point": [0.1, 0.1, 0.0], "probability": 2}), "[0, 1]"),
    ],
)
def test_faulty_predictions_fail_with_one_line_for_the_participant(
    small_set: Any, tmp_path: Path, mutate: Callable[[dict[str, Any]], Any], expected: str
) -> None:
    predictions = {name: _multiple_points(points) for name, points in small_set.ground_truth.items()}
    mutate(predictions)
    with pytest.raises(SubmissionError) as caught:
        run_pipeline(_input(small_set, _write(tmp_path / "p.json", predictions), tmp_path))
    message = str(caught.value)
    assert expected in message
    assert "\n" not in message


def test_a_file_that_is_not_json_is_the_participants_fault(small_set: Any, tmp_path: Path) -> None:
    artifact = tmp_path / "p.json"
    artifact.write_text("{not json")
    with pytest.raises(SubmissionError):
        run_pipeline(_input(small_set, artifact, tmp_path))


def test_model_runs_replay_and_score_like_the_same_predictions_file(
    small_set: Any, tmp_path: Path, predictions_for: Callable[[Any, int], dict[str, Any]]
) -> None:
    artifact = _write(tmp_path / "replay.json", predictions_for(small_set, 3))
    as_file = run_pipeline(_input(small_set, artifact, tmp_path))
    as_model = run_pipeline(_input(small_set, artifact, tmp_path, kind="model"), runner_for=_replay)
    assert as_model == as_file
    assert as_file.tp > 0
    assert as_file.fn > 0


def test_sharded_runs_merge_to_the_single_run_result(
    small_set: Any, tmp_path: Path, predictions_for: Callable[[Any, int], dict[str, Any]]
) -> None:
    artifact = _write(tmp_path / "replay.json", predictions_for(small_set, 4))
    inp = replace(_input(small_set, artifact, tmp_path, kind="model"), bootstrap=50, seed=3)
    test_set = open_test_set(small_set.root)
    shards = shard_plan(test_set, key="scanner")
    assert [len(s) for s in shards] == [2, 2, 2]
    assert sorted(n for s in shards for n in s) == sorted(small_set.ground_truth)

    outputs = []
    for index, cases in enumerate(shards):
        produced = predict(inp, test_set, cases, runner_for=_replay, run_name=f"shard-{index}")
        assert set(produced) == set(cases)
        # Shards travel between processes as JSON: the round trip must be exact.
        outputs.append(predictions_from_json(json.loads(json.dumps(predictions_to_json(produced)))))
    sharded = score(inp, test_set, merge_shards(outputs))
    single = run_pipeline(inp, runner_for=_replay)

    assert sharded == single
    assert single.f1_ci_low is not None
    assert single.f1_ci_low <= single.f1 <= (single.f1_ci_high or 0)
    # intervals of every count metric, from the same resamples as the F1 interval of the scoring core
    assert single.intervals["f1"] == [single.f1_ci_low, single.f1_ci_high]
    for metric in ("precision", "recall"):
        low, high = single.intervals[metric]
        assert low <= getattr(single, metric) <= high


def test_a_runner_may_not_report_images_it_was_not_given(small_set: Any, tmp_path: Path) -> None:
    class Greedy:
        def run(self, request: Any) -> Path:
            out = request.output_dir / "p.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            names = [*request.cases, "006.tiff"]
            out.write_text(json.dumps({n: _multiple_points([]) for n in names}))
            return out

    inp = _input(small_set, tmp_path / "unused", tmp_path, kind="model")
    test_set = open_test_set(small_set.root)
    with pytest.raises(SubmissionError, match="unknown image"):
        predict(inp, test_set, ["001.tiff"], runner_for=lambda _k: Greedy())


def test_merging_refuses_a_case_produced_twice() -> None:
    case = CasePredictions.from_points([[0.1, 0.1, 0.0]])
    with pytest.raises(ValueError, match="two shards"):
        merge_shards([{"001.tiff": case}, {"001.tiff": case}])


def test_predictions_json_round_trip_keeps_nan_probabilities_and_exact_floats() -> None:
    original = {
        "a.tiff": CasePredictions.from_points(
            [[0.1 + 1e-17, 1 / 3, 0.0], [2 / 7, 0.2, 0.0]], [math.nan, 0.3], [True, False]
        )
    }
    back = predictions_from_json(json.loads(json.dumps(predictions_to_json(original))))
    np.testing.assert_array_equal(back["a.tiff"].points, original["a.tiff"].points)
    np.testing.assert_array_equal(back["a.tiff"].probabilities, original["a.tiff"].probabilities)
    np.testing.assert_array_equal(back["a.tiff"].mitotic, original["a.tiff"].mitotic)


def test_load_runner_reads_the_kind_specific_setting() -> None:
    from app.settings import Settings

    runner = load_runner("model", Settings(runner_model="worker.runners:ReplayRunner"))
    assert isinstance(runner, ReplayRunner)
    defaults = Settings(runner_model="", runner_container="")
    with pytest.raises(RunnerNotConfiguredError, match="MIDOG_RUNNER_UNKNOWN"):
        load_runner("unknown", defaults)
    assert type(load_runner("container", defaults)).__name__ == "ContainerRunner"
    assert type(load_runner("model", defaults)).__name__ == "ModelArchiveRunner"
    with pytest.raises(RunnerNotConfiguredError, match="form"):
        load_runner("model", Settings(runner_model="worker.runners"))


def _alive(marker: str) -> list[str]:
    out = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True, check=False).stdout
    return out.split()


def test_run_bounded_kills_the_whole_process_group_at_the_timeout() -> None:
    marker = f"midog-bounded-{uuid.uuid4().hex}"
    # A leader that starts a grandchild and both sleep: the timeout must take both down.
    script = f"import subprocess,sys,time; subprocess.Popen([sys.executable,'-c','import time; time.sleep(60)','{marker}']); time.sleep(60)"
    started = time.monotonic()
    with pytest.raises(SubmissionError, match="time limit exceeded"):
        run_bounded([sys.executable, "-c", script, marker], timeout_s=1.0)
    assert time.monotonic() - started < 5
    assert _alive(marker) == []


def test_run_bounded_reports_a_sigkilled_job_as_a_memory_limit() -> None:
    with pytest.raises(SubmissionError, match="memory limit exceeded"):
        run_bounded([sys.executable, "-c", "import os,signal; os.kill(os.getpid(), signal.SIGKILL)"], timeout_s=10)
    done = run_bounded([sys.executable, "-c", "raise SystemExit(3)"], timeout_s=10)
    assert done.returncode == 3


def test_an_undefined_ap_is_stored_as_null(tmp_path: Path) -> None:
    """A group without any ground truth has no AP (the scoring core says -1, as COCO does): the result says
    null, never -1 (which would be shown and sorted as a score)."""
    from worker.datasets.manifest import Case, Manifest, write_test_set

    cases = [
        Case(name=f"{i}.tiff", image=None, scanner=s, width=400, height=400, spacing_mm=0.00025, sha256=None,
             groups={"scanner": s})
        for i, s in enumerate(["A", "B"])
    ]  # fmt: skip
    root = tmp_path / "set"
    write_test_set(
        root, Manifest(name="t", cases=tuple(cases)), ground_truth={"0.tiff": [[0.05, 0.05, 0.0]], "1.tiff": []}
    )
    artifact = tmp_path / "p.json"
    points = {"type": "Multiple points", "points": [{"point": [0.05, 0.05, 0], "probability": 0.9}]}
    artifact.write_text(json.dumps({"0.tiff": points, "1.tiff": points}))
    outcome = run_pipeline(
        PipelineInput(
            evaluation_id=1, kind="predictions", artifact=artifact, test_set_dir=root, work_dir=tmp_path, timeout_s=10
        )
    )
    assert outcome.groups["B"]["ap"] is None
    assert outcome.groups["A"]["ap"] == pytest.approx(1.0)
    assert outcome.ap is not None


class _FeatureWritingRunner:
    """Replays the submitted file and, as a model archive declaring features would, writes one feature vector
    per case beside the predictions: scanner "Scanner A" at 0, the others further away."""

    def __init__(self, body: dict[str, Any] | None = None) -> None:
        self.body = body

    def run(self, request: Any) -> Path:
        produced = ReplayRunner().run(request)
        features = Path(request.output_dir) / "features"
        features.mkdir(parents=True, exist_ok=True)
        manifest = json.loads((Path(request.test_set_dir) / "manifest.json").read_text())
        offset = {"Scanner A": 0.0, "Scanner B": 1.0, "Scanner C": 2.0}
        for i, case in enumerate(c for c in manifest["cases"] if c["name"] in request.cases):
            value = offset[case["scanner"]] + 0.01 * i
            body = self.body or {"features": [value, 1.0]}
            (features / f"{Path(case['name']).stem}.json").write_text(json.dumps(body))
        return produced


def test_a_model_that_writes_features_gets_its_representation_shift(
    small_set: Any, tmp_path: Path, predictions_for: Callable[[Any, int], dict[str, Any]]
) -> None:
    artifact = _write(tmp_path / "replay.json", predictions_for(small_set, 3))
    inp = replace(_input(small_set, artifact, tmp_path, kind="model"), seen_groups=("Scanner A",))
    test_set = open_test_set(small_set.root)
    cases = [c.name for c in test_set.cases]
    features: dict[str, Any] = {}
    predictions = predict(inp, test_set, cases, runner_for=lambda _k: _FeatureWritingRunner(), case_features=features)
    outcome = score(inp, test_set, predictions, case_features=features)
    rep = outcome.representation
    assert rep is not None
    assert rep["available"] is True
    assert rep["reference"] == "seen groups (Scanner A)"
    assert set(rep["shift"]) == {"Scanner B", "Scanner C"}
    assert rep["shift"]["Scanner C"]["wasserstein"] > rep["shift"]["Scanner B"]["wasserstein"]
    assert rep["scanner_classifier"]["balanced_accuracy"] == pytest.approx(1.0)
    # the scores are those of the same predictions without features
    assert replace(outcome, representation=None) == score(inp, test_set, predictions)

    broken: dict[str, Any] = {}
    predict(
        inp,
        test_set,
        cases,
        runner_for=lambda _k: _FeatureWritingRunner({"features": ["x"]}),
        run_name="broken",
        case_features=broken,
    )
    unavailable = score(inp, test_set, predictions, case_features=broken).representation
    assert unavailable is not None
    assert unavailable["available"] is False
    assert "finite numbers" in unavailable["reason"] or "is not" in unavailable["reason"]
    # a predictions file or a run that writes no features: nothing to report
    assert run_pipeline(_input(small_set, artifact, tmp_path)).representation is None


class _LoggingRunner:
    """Writes a log tail per case as container runners do, then fails on the last case like a program that
    cannot import its package; keeps the request it was given."""

    def __init__(self) -> None:
        self.request: Any = None

    def run(self, request: Any) -> Path:
        self.request = request
        logs = Path(request.output_dir) / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        for case in request.cases:
            (logs / f"{case}.log").write_text(f"loading weights for {case}\n")
        last = request.cases[-1]
        (logs / f"{last}.log").write_text("x" * 3_000_000 + "\nModuleNotFoundError: No module named 'timm'\n")
        (logs / "stray.log").symlink_to("/etc/passwd")  # neither a case nor a plain file: never kept
        raise SubmissionError(f"case {last}: the program failed")


def test_a_failed_run_keeps_each_cases_log_tail_and_passes_the_container_options(
    small_set: Any, tmp_path: Path
) -> None:
    test_set = open_test_set(small_set.root)
    cases = [c.name for c in test_set.cases][:3]
    model = tmp_path / "model.tar.gz"
    model.write_bytes(b"weights")
    inp = replace(
        _input(small_set, tmp_path / "image.tar", tmp_path, kind="container"),
        model_archive=model,
        run_mode="invoke",
        show_logs=True,
        logs_dir=tmp_path / "storage" / "logs" / "evaluation-1",
    )
    runner = _LoggingRunner()
    with pytest.raises(SubmissionError, match="the program failed"):
        predict(inp, test_set, cases, runner_for=lambda _k: runner)
    assert (runner.request.model_archive, runner.request.run_mode, runner.request.show_logs) == (model, "invoke", True)
    kept = sorted(p.name for p in (tmp_path / "storage" / "logs" / "evaluation-1").iterdir())
    assert kept == sorted(f"{case}.log" for case in cases)
    assert (inp.logs_dir / f"{cases[0]}.log").read_text() == f"loading weights for {cases[0]}\n"  # type: ignore[operator]
    tail = (inp.logs_dir / f"{cases[-1]}.log").read_bytes()  # type: ignore[operator]
    assert len(tail) == 1024 * 1024  # bounded, and the end of it: the first cause is there
    assert tail.endswith(b"ModuleNotFoundError: No module named 'timm'\n")
