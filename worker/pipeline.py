"""The evaluation pipeline, free of Celery and of the database: inputs -> runner -> predictions -> scores.

Two tasks: detection (points per image: `predict`, `score`) and classification of the patches of stacks
(MIDOG 2025 Track 2: `predict_stacks`, `score_stacks`), both ending in an `Outcome` shaped like a Result row.

- predictions submissions: the uploaded file is read and validated by the scoring core;
- model and container submissions: a `Runner` (worker.runners) produces the predictions for a list of
  cases; a hidden set can be split into shards (one per scanner) run separately and merged before scoring,
  which gives exactly the result of one run because detections are per case and scoring sees the union.

Errors: a fault of the submission raises SubmissionError (its one line is shown to the participant);
anything else propagates for the task to map (worker.tasks).

Imports worker.evaluation, worker.datasets, worker.runners and worker.errors only; must not import Celery,
SQLAlchemy, FastAPI or torch.
"""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from worker.datasets.manifest import TestSet
from worker.errors import SubmissionError
from worker.evaluation.bootstrap import intervals
from worker.evaluation.classification import (
    ClassificationScores,
    StackPrediction,
    evaluate_classification,
)
from worker.evaluation.classification import read_ground_truth as read_stack_truth
from worker.evaluation.classification import read_predictions as read_stack_predictions
from worker.evaluation.io import FormatError, check_cases, load_ground_truth, read_predictions
from worker.evaluation.metrics import evaluate
from worker.evaluation.representation import FeaturesError, read_case_features, representation_shift
from worker.evaluation.types import CasePredictions, Rules
from worker.runners import LOGS_DIR, Runner, RunRequest, load_runner
from worker.vocabulary import CLASSIFICATION, DETECTION, SubmissionKind

ProgressCallback = Callable[[float, str], None]
RunnerFactory = Callable[[str], Runner]


@dataclass(frozen=True)
class PipelineInput:
    """Everything one evaluation needs, as plain values (the task reads them from the database)."""

    evaluation_id: int
    kind: str
    artifact: Path
    test_set_dir: Path
    work_dir: Path
    timeout_s: float
    rules: str = "midog2022"
    bootstrap: int = 0
    seed: int = 0
    group_key: str = "scanner"
    radius_mm: float = 0.0075
    hidden: bool = True
    input_layout: str | None = None
    memory_bytes: int | None = None
    task: str = DETECTION
    seen_groups: tuple[str, ...] = ()  # the phase's groups covered by training (representation shift reference)
    model_archive: Path | None = None  # a container submission's model tarball
    run_mode: str = "exec"  # container submissions: exec | invoke
    show_logs: bool = False  # the phase lets participants read their runs' logs
    logs_dir: Path | None = None  # where each case's log tail is kept (storage); None: not kept


@dataclass(frozen=True)
class Outcome:
    """Scores in the shape of a Result row: overall counts and rates, per-group and per-case tables."""

    tp: int
    fp: int
    fn: int
    precision: float
    recall: float
    f1: float
    ap: float | None
    f1_ci_low: float | None
    f1_ci_high: float | None
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    cases: dict[str, dict[str, int]] = field(default_factory=dict)
    # 95% intervals over the same resamples of cases (empty without bootstrap): f1, precision and recall;
    # balanced_accuracy for classification
    intervals: dict[str, list[float]] = field(default_factory=dict)
    balanced_accuracy: float | None = None
    roc_auc: float | None = None
    # the official evaluator's aggregate keys (metrics.json), non-finite numbers as null
    aggregates: dict[str, Any] = field(default_factory=dict)
    # a model archive that declares features: worker.evaluation.representation's analysis; None otherwise
    representation: dict[str, Any] | None = None


def _ignore_progress(_fraction: float, _message: str) -> None:
    return None


def open_test_set(directory: Path) -> TestSet:
    return TestSet.open(directory)


def shard_plan(test_set: TestSet, *, key: str = "scanner") -> list[tuple[str, ...]]:
    """Cases grouped by their `key` label (in manifest order): the unit of parallel runs."""
    shards: dict[str, list[str]] = {}
    for case in test_set.cases:
        shards.setdefault(case.groups.get(key, case.scanner), []).append(case.name)
    return [tuple(names) for names in shards.values()]


def _extents(test_set: TestSet) -> dict[str, tuple[float, float]]:
    extents: dict[str, tuple[float, float]] = {}
    for case in test_set.cases:
        if case.spacing_mm is None:
            raise ValueError(f"test set {test_set.root}: case {case.name} has no pixel spacing")
        extents[case.name] = (case.width * case.spacing_mm, case.height * case.spacing_mm)
    return extents


def predict(
    inp: PipelineInput,
    test_set: TestSet,
    cases: Iterable[str],
    *,
    runner_for: RunnerFactory = load_runner,
    progress: ProgressCallback = _ignore_progress,
    run_name: str = "all",
    run_info: dict[str, Any] | None = None,
    case_features: dict[str, Any] | None = None,
) -> dict[str, CasePredictions]:
    """The submission's detections for `cases`, keyed by case name and validated against the set.

    A predictions file is read whole (its cases are checked at scoring); a runner is run on `cases` only
    and its output may name no other image. `run_name` names the run's output directory (one per shard).
    `run_info`, when given, receives what the runner tells of its run (runner, backend, device, image).
    `case_features`, when given, receives the per-case feature vectors a model archive declaring features
    wrote (worker.evaluation.representation), or {"error": line} when they cannot be used.
    """
    if inp.kind == SubmissionKind.PREDICTIONS:
        progress(0.1, "reading predictions")
        return _read(inp.artifact, inp.rules)
    _path, predictions = _detect(inp, test_set, tuple(cases), runner_for, progress, run_name, run_info, case_features)
    return predictions


def _detect(
    inp: PipelineInput,
    test_set: TestSet,
    wanted: tuple[str, ...],
    runner_for: RunnerFactory,
    progress: ProgressCallback,
    run_name: str,
    run_info: dict[str, Any] | None,
    case_features: dict[str, Any] | None,
) -> tuple[Path, dict[str, CasePredictions]]:
    """Run the submission on `wanted` and check its detections: (its output file, the detections)."""
    progress(0.05, f"running the {inp.kind} on {len(wanted)} images")
    produced = _run(inp, wanted, runner_for=runner_for, run_name=run_name, run_info=run_info)
    feature_dir = produced.parent / "features"
    if case_features is not None and feature_dir.is_dir():
        try:
            case_features.update(read_case_features(feature_dir, wanted))
        except FeaturesError as exc:
            case_features.clear()
            case_features["error"] = str(exc)
    progress(0.75, "reading the detections")
    extents = _extents(test_set)
    try:
        predictions = check_cases(
            _read(produced, inp.rules), extents={name: extents[name] for name in wanted}, missing="error"
        )
    except FormatError as exc:
        raise SubmissionError(str(exc)) from exc
    return produced, predictions


def produce(
    inp: PipelineInput,
    test_set: TestSet,
    *,
    runner_for: RunnerFactory = load_runner,
    progress: ProgressCallback = _ignore_progress,
    run_info: dict[str, Any] | None = None,
    case_features: dict[str, Any] | None = None,
) -> Path:
    """The predict half alone, for a GPU host that never sees the ground truth: run a model or container
    submission on every case of the set, check its output (a fault of the submission raises SubmissionError)
    and return the output file, which `score_file` scores where the ground truth is."""
    if inp.kind == SubmissionKind.PREDICTIONS:
        raise ValueError("a predictions file is scored where it was uploaded; nothing to run")
    cases = tuple(case.name for case in test_set.cases)
    if inp.task == CLASSIFICATION:
        path, _stacks = _classify(inp, test_set, runner_for, progress, run_info)
        return path
    path, _detections = _detect(inp, test_set, cases, runner_for, progress, "all", run_info, case_features)
    return path


def score_file(
    inp: PipelineInput,
    test_set: TestSet,
    path: Path,
    *,
    progress: ProgressCallback = _ignore_progress,
    case_features: Mapping[str, Any] | None = None,
) -> Outcome:
    """The score half for an output file made elsewhere (`produce` on a GPU host): read and checked again
    here, never trusted, then scored exactly as a run on this host would be."""
    if inp.task == CLASSIFICATION:
        patches = {case.name: int(case.patches or 0) for case in test_set.cases}
        try:
            stacks = read_stack_predictions(path, patches)
        except FormatError as exc:
            raise SubmissionError(str(exc)) from exc
        return score_stacks(inp, test_set, stacks, progress=progress)
    return score(inp, test_set, _read(path, inp.rules), progress=progress, case_features=case_features)


def _run(
    inp: PipelineInput,
    cases: tuple[str, ...],
    *,
    runner_for: RunnerFactory,
    run_name: str,
    run_info: dict[str, Any] | None,
) -> Path:
    """Run the submission's runner on `cases`; `run_info` receives what the runner tells of its run."""
    runner = runner_for(inp.kind)
    output_dir = inp.work_dir / "output" / run_name
    try:
        produced = runner.run(
            RunRequest(
                evaluation_id=inp.evaluation_id,
                kind=inp.kind,
                artifact=inp.artifact,
                test_set_dir=inp.test_set_dir,
                cases=cases,
                output_dir=output_dir,
                timeout_s=inp.timeout_s,
                hidden=inp.hidden,
                input_layout=inp.input_layout,
                memory_bytes=inp.memory_bytes,
                task=inp.task,
                model_archive=inp.model_archive,
                run_mode=inp.run_mode,
                show_logs=inp.show_logs,
            )
        )
    finally:
        # kept whether the run succeeded or not: a failed run's logs are the ones that matter
        if inp.logs_dir is not None:
            keep_logs(output_dir / LOGS_DIR, inp.logs_dir, cases)
    if run_info is not None:
        run_info.update({"runner": type(runner).__name__, **dict(getattr(runner, "run_info", None) or {})})
    return produced


MAX_LOG_BYTES = 1024 * 1024  # per case: 500 lines of up to about 2 KiB each


def keep_logs(source: Path, dest: Path, cases: Iterable[str]) -> list[str]:
    """Copy the log tail of each of `cases` a runner left in `source` (`<case>.log`) to `dest`; the cases kept.

    The files may have been written while participant code ran: only regular files (never a link) named after
    a case of the run are read, each at most its last MAX_LOG_BYTES, and each is replaced atomically."""
    kept: list[str] = []
    for case in cases:
        if "/" in case or case in (".", "..") or "\x00" in case:
            continue
        path = source / f"{case}.log"
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue  # no log for this case (or not a plain file)
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                continue
            handle.seek(max(0, info.st_size - MAX_LOG_BYTES))
            tail = handle.read(MAX_LOG_BYTES)
        dest.mkdir(parents=True, exist_ok=True)
        partial = dest / f".{case}.log.tmp"
        partial.write_bytes(tail)
        partial.replace(dest / f"{case}.log")
        kept.append(case)
    return kept


def _read(path: Path, rules: str) -> dict[str, CasePredictions]:
    """Predictions as the phase's rules read them (midog2025: the official 2025 checks)."""
    try:
        return read_predictions(path, rules=rules)
    except FormatError as exc:
        raise SubmissionError(str(exc)) from exc


def score(
    inp: PipelineInput,
    test_set: TestSet,
    predictions: Mapping[str, CasePredictions],
    *,
    progress: ProgressCallback = _ignore_progress,
    case_features: Mapping[str, Any] | None = None,
) -> Outcome:
    """Validate the predictions against the set (names, extents) and score them with the scoring core;
    with `case_features` (from `predict`), also the representation shift of the model's features."""
    progress(0.8, "checking predictions")
    try:
        resolved = check_cases(predictions, extents=_extents(test_set), missing="error")
    except FormatError as exc:
        raise SubmissionError(str(exc)) from exc
    progress(0.85, "scoring")
    ground_truth = load_ground_truth(test_set.ground_truth_path, rules=inp.rules)
    labels = {case.name: case.groups.get(inp.group_key, case.scanner) for case in test_set.cases}
    report = evaluate(
        ground_truth,
        resolved,
        groups=labels,
        rules=inp.rules,
        radius_mm=inp.radius_mm,
        bootstrap=inp.bootstrap,
        seed=inp.seed,
    )
    overall = report.overall
    low, high = overall.ci95 if overall.ci95 is not None else (None, None)
    groups = {label: _scores_row(scores) for label, scores in report.groups.items()}
    cases = {
        name: {
            "tp": int(row["true_positives"]),
            "fp": int(row["false_positives"]),
            "fn": int(row["false_negatives"]),
        }
        for name, row in report.to_dict()["case"].items()
    }
    counts = np.array([[c["tp"], c["fp"], c["fn"]] for c in cases.values()], dtype=np.int64).reshape(-1, 3)
    spread = intervals(counts, resamples=inp.bootstrap, seed=inp.seed, rules=Rules(inp.rules))
    return Outcome(
        aggregates=json_safe(report.to_dict()["aggregates"]),
        intervals={metric: [low, high] for metric, (low, high) in spread.items()},
        tp=int(overall.tp),
        fp=int(overall.fp),
        fn=int(overall.fn),
        precision=float(overall.precision),
        recall=float(overall.recall),
        f1=float(overall.f1),
        ap=_stored_ap(overall.ap),
        f1_ci_low=_optional_float(low),
        f1_ci_high=_optional_float(high),
        groups=groups,
        cases=cases,
        representation=_representation(case_features, labels, inp.seen_groups),
    )


def _representation(
    case_features: Mapping[str, Any] | None, labels: Mapping[str, str], seen: tuple[str, ...]
) -> dict[str, Any] | None:
    """The representation-shift analysis of the features a run wrote; None when it wrote none."""
    if not case_features:
        return None
    if "error" in case_features:
        return {"available": False, "reason": str(case_features["error"])}
    return representation_shift(case_features, labels, seen=seen)


def predict_stacks(
    inp: PipelineInput,
    test_set: TestSet,
    *,
    runner_for: RunnerFactory = load_runner,
    progress: ProgressCallback = _ignore_progress,
    run_info: dict[str, Any] | None = None,
) -> dict[str, StackPrediction]:
    """A classification submission's outputs for every stack, checked against each stack's patch count."""
    patches = {case.name: int(case.patches or 0) for case in test_set.cases}
    if inp.kind != SubmissionKind.PREDICTIONS:
        _path, stacks = _classify(inp, test_set, runner_for, progress, run_info)
        return stacks
    progress(0.1, "reading predictions")
    try:
        return read_stack_predictions(inp.artifact, patches)
    except FormatError as exc:
        raise SubmissionError(str(exc)) from exc


def _classify(
    inp: PipelineInput,
    test_set: TestSet,
    runner_for: RunnerFactory,
    progress: ProgressCallback,
    run_info: dict[str, Any] | None,
) -> tuple[Path, dict[str, StackPrediction]]:
    """Run the submission on every stack and check its outputs: (its output file, the classifications)."""
    patches = {case.name: int(case.patches or 0) for case in test_set.cases}
    progress(0.05, f"running the {inp.kind} on {len(patches)} stacks")
    path = _run(inp, tuple(patches), runner_for=runner_for, run_name="all", run_info=run_info)
    progress(0.75, "reading the classifications")
    try:
        return path, read_stack_predictions(path, patches)
    except FormatError as exc:
        raise SubmissionError(str(exc)) from exc


def score_stacks(
    inp: PipelineInput,
    test_set: TestSet,
    predictions: Mapping[str, StackPrediction],
    *,
    progress: ProgressCallback = _ignore_progress,
) -> Outcome:
    """Score a classification submission: pooled and per tumour domain, the official keys in `aggregates`."""
    progress(0.85, "scoring")
    truth = read_stack_truth(test_set.ground_truth_path)
    report = evaluate_classification(truth, predictions, bootstrap=inp.bootstrap, seed=inp.seed)
    overall = report.overall
    groups = {label: _stack_row(scores) for label, scores in report.domains.items()}
    row = _stack_row(overall)
    return Outcome(
        tp=overall.tp,
        fp=overall.fp,
        fn=overall.fn,
        precision=row["precision"],
        recall=row["recall"],
        f1=row["f1"],
        ap=None,
        f1_ci_low=None,
        f1_ci_high=None,
        groups=groups,
        cases=report.stacks,
        intervals={"balanced_accuracy": list(overall.ci95)} if overall.ci95 else {},
        balanced_accuracy=overall.balanced_accuracy,
        roc_auc=overall.roc_auc,
        aggregates=json_safe(report.to_dict()["aggregates"]),
    )


def _stack_row(scores: ClassificationScores) -> dict[str, Any]:
    """A group's row: the counts, the atypical class's precision/recall/F1 (0 where undefined, as
    scikit-learn's zero_division), and the Track 2 metrics."""
    tp, fp, fn = scores.tp, scores.fp, scores.fn
    low, high = scores.ci95 if scores.ci95 is not None else (None, None)
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": scores.tn,
        "precision": tp / (tp + fp) if tp + fp else 0.0,
        "recall": tp / (tp + fn) if tp + fn else 0.0,
        "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0,
        "sensitivity": scores.sensitivity,
        "specificity": scores.specificity,
        "balanced_accuracy": scores.balanced_accuracy,
        "accuracy": scores.accuracy,
        "roc_auc": scores.roc_auc,
        "balanced_accuracy_ci_low": low,
        "balanced_accuracy_ci_high": high,
    }


def json_safe(value: Any) -> Any:
    """`value` with every NaN or infinity replaced by None (the databases store strict JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return value


def _optional_float(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return None if math.isnan(number) else number


def _stored_ap(value: Any) -> float | None:
    """The scoring core reports AP -1 where it is undefined (no ground truth), as COCO and the official code
    do; results store null instead, shown as "–" and sorted last."""
    number = _optional_float(value)
    return None if number is None or number < 0 else number


def _scores_row(scores: Any) -> dict[str, Any]:
    low, high = scores.ci95 if scores.ci95 is not None else (None, None)
    return {
        "tp": int(scores.tp),
        "fp": int(scores.fp),
        "fn": int(scores.fn),
        "precision": float(scores.precision),
        "recall": float(scores.recall),
        "f1": float(scores.f1),
        "ap": _stored_ap(scores.ap),
        "f1_ci_low": _optional_float(low),
        "f1_ci_high": _optional_float(high),
    }


def run_pipeline(
    inp: PipelineInput,
    *,
    runner_for: RunnerFactory = load_runner,
    progress: ProgressCallback = _ignore_progress,
) -> Outcome:
    """One evaluation in one process: all cases in one run, then scoring."""
    test_set = open_test_set(inp.test_set_dir)
    names = [c.name for c in test_set.cases]
    predictions = predict(inp, test_set, names, runner_for=runner_for, progress=progress)
    return score(inp, test_set, predictions, progress=progress)


def merge_shards(shards: Iterable[Mapping[str, CasePredictions]]) -> dict[str, CasePredictions]:
    """The union of shard outputs; a case produced by two shards is an internal error, never merged."""
    merged: dict[str, CasePredictions] = {}
    for shard in shards:
        for name, case in shard.items():
            if name in merged:
                raise ValueError(f"case {name} was produced by two shards")
            merged[name] = case
    return merged


def predictions_to_json(predictions: Mapping[str, CasePredictions]) -> dict[str, Any]:
    """A lossless JSON form of scoring-core predictions (floats round-trip exactly; NaN becomes null)."""
    return {
        name: {
            "points": case.points.tolist(),
            "probabilities": [None if math.isnan(p) else p for p in case.probabilities.tolist()],
            "mitotic": case.mitotic.tolist(),
        }
        for name, case in predictions.items()
    }


def predictions_from_json(obj: Mapping[str, Any]) -> dict[str, CasePredictions]:
    """The inverse of `predictions_to_json`."""
    result: dict[str, CasePredictions] = {}
    for name, case in obj.items():
        points = np.asarray(case["points"], dtype=np.float64).reshape(-1, 3)
        probabilities = np.asarray([math.nan if p is None else p for p in case["probabilities"]], dtype=np.float64)
        mitotic = np.asarray(case["mitotic"], dtype=bool)
        result[name] = CasePredictions(points=points, probabilities=probabilities, mitotic=mitotic)
    return result
