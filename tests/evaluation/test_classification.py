"""MIDOG 2025 Track 2 (atypical versus normal): hand-computed cases, the official validation, and scikit-learn's
metrics as the reference the official evaluator uses."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from worker.evaluation.classification import (
    Stack,
    StackPrediction,
    check_stack,
    evaluate_classification,
    patch_counts,
    read_ground_truth,
    read_predictions,
    roc_auc,
)
from worker.evaluation.errors import FormatError

sklearn_metrics = pytest.importorskip("sklearn.metrics", reason="scikit-learn is a test dependency (dev extra)")


def _stack(labels: str, domains: list[int] | None = None) -> Stack:
    """'aan' -> atypical, atypical, normal."""
    values = np.array([1 if c == "a" else 0 for c in labels], dtype=np.int64)
    return Stack(labels=values, domains=np.array(domains or [1] * len(labels), dtype=np.int64))


def _prediction(classes: str, confidences: list[float]) -> StackPrediction:
    return StackPrediction(
        classes=np.array([1 if c == "a" else 0 for c in classes], dtype=np.int64),
        confidences=np.array(confidences, dtype=np.float64),
    )


def test_hand_computed_counts_rates_and_domains() -> None:
    truth = {"s1.tiff": _stack("aann", [1, 1, 2, 2]), "s2.tiff": _stack("anna", [1, 2, 2, 2])}
    predictions = {
        "s1.tiff": _prediction("anan", [0.9, 0.4, 0.6, 0.1]),  # TP, FN, FP, TN
        "s2.tiff": _prediction("annn", [0.8, 0.3, 0.2, 0.7]),  # TP, TN, TN, FN
    }
    report = evaluate_classification(truth, predictions)
    overall = report.overall
    assert (overall.tp, overall.fp, overall.fn, overall.tn) == (2, 1, 2, 3)
    assert overall.sensitivity == 2 / 4
    assert overall.specificity == 3 / 4
    assert overall.balanced_accuracy == (2 / 4 + 3 / 4) / 2
    assert overall.accuracy == 5 / 8
    # positives 0.9, 0.4, 0.8, 0.7 against negatives 0.6, 0.1, 0.3, 0.2: all pairs ordered right but (0.4, 0.6)
    assert overall.roc_auc == 15 / 16
    aggregates = report.to_dict()["aggregates"]
    assert aggregates["overall_balanced_accuracy"] == 0.625
    # domain 1: patches s1[0] a->a, s1[1] a->n, s2[0] a->a: no normal figure at all
    assert aggregates["domain_1"]["sensitivity"] == 2 / 3
    assert aggregates["domain_1"]["specificity"] == 0.0  # scikit-learn's zero_division, as officially
    assert aggregates["domain_1"]["roc_auc"] is None
    assert report.domains["1"].undefined["roc_auc"] == "ROC AUC needs figures of both classes"
    assert sorted(k for k in aggregates if k.startswith("domain_")) == ["domain_1", "domain_2"]
    assert set(aggregates["domain_2"]) == {"sensitivity", "specificity", "balanced_accuracy", "accuracy", "roc_auc"}


def test_roc_auc_counts_tied_scores_as_half() -> None:
    labels = np.array([1, 0, 0, 1])
    scores = np.array([0.5, 0.5, 0.2, 0.8])
    # pairs (0.5, 0.5) half, (0.5, 0.2), (0.8, 0.5), (0.8, 0.2) whole: 3.5 of 4
    assert roc_auc(labels, scores) == 0.875
    assert roc_auc(np.array([1, 1]), np.array([0.1, 0.9])) is None
    assert roc_auc(np.array([0, 1]), np.array([0.3, 0.3])) == 0.5


def test_a_set_without_atypical_figures_has_no_sensitivity_overall() -> None:
    truth = {"s.tiff": _stack("nn")}
    report = evaluate_classification(truth, {"s.tiff": _prediction("an", [0.7, 0.2])})
    assert report.overall.sensitivity is None
    assert report.overall.balanced_accuracy is None
    assert report.overall.specificity == 0.5
    assert set(report.overall.undefined) == {"sensitivity", "balanced_accuracy", "roc_auc"}


@pytest.mark.parametrize(
    ("items", "message"),
    [
        ([{"class": "atypical", "confidence": 1}], "confidence must be a float (JSON 1 is not; write e.g. 1.0)"),
        ([{"class": "atypical", "confidence": True}], "confidence must be a float"),
        ([{"class": "atypical", "confidence": "0.5"}], "confidence must be a float"),
        ([{"class": "atypical", "confidence": float("nan")}], "confidence must be a finite number in [0, 1]"),
        ([{"class": "atypical", "confidence": 7.5}], "confidence must be a finite number in [0, 1]"),
        ([{"class": "atypical", "confidence": -0.5}], "confidence must be a finite number in [0, 1]"),
        ([{"class": "mitotic", "confidence": 0.5}], "class must be 'normal' or 'atypical', got 'mitotic'"),
        ([{"confidence": 0.5}], "needs 'class' and 'confidence'"),
        ([{"class": "normal"}], "needs 'class' and 'confidence'"),
        (["atypical"], "each output must be an object"),
        ([], "0 outputs for 1 patches"),
        ([{"class": "normal", "confidence": 0.1}] * 2, "2 outputs for 1 patches"),
        ({"class": "normal", "confidence": 0.1}, "expected a list"),
    ],
)
def test_outputs_are_refused_as_the_official_evaluator_refuses_them(items: Any, message: str) -> None:
    with pytest.raises(FormatError) as caught:
        check_stack("stack_7.tiff", items, expected=1)
    assert message in str(caught.value)
    assert str(caught.value).startswith("stack_7.tiff")
    assert check_stack("s", [{"class": "normal", "confidence": 1.0}], expected=1).confidences[0] == 1.0


def _official(truth: dict[str, Stack], predictions: dict[str, StackPrediction]) -> dict[str, Any]:
    """The official aggregation, step by step, on scikit-learn (the reference)."""
    gt = np.hstack([truth[n].labels for n in truth])
    pred = np.hstack([predictions[n].classes for n in truth])
    score = np.hstack([predictions[n].confidences for n in truth])
    domain = np.hstack([truth[n].domains for n in truth])
    tp, fp = int(np.sum((pred == 1) & (gt == 1))), int(np.sum((pred == 1) & (gt == 0)))
    fn, tn = int(np.sum((pred == 0) & (gt == 1))), int(np.sum((pred == 0) & (gt == 0)))
    sens, spec = tp / (tp + fn), tn / (tn + fp)
    aggregates: dict[str, Any] = {
        "overall_sensitivity": float(sens),
        "overall_specificity": float(spec),
        "overall_balanced_accuracy": float((spec + sens) / 2),
        "overall_roc_auc": sklearn_metrics.roc_auc_score(gt, score),
        "overall_accuracy": float((tp + tn) / (tp + fn + fp + tn)),
    }
    for d in np.sort(np.unique(domain)):
        inside = domain == d
        s = sklearn_metrics.recall_score(y_true=gt[inside], y_pred=pred[inside], zero_division=0.0)
        p = sklearn_metrics.recall_score(y_true=gt[inside], y_pred=pred[inside], pos_label=0, zero_division=0.0)
        both = len(np.unique(gt[inside])) == 2
        aggregates[f"domain_{d}"] = {
            "sensitivity": s,
            "specificity": p,
            "balanced_accuracy": (s + p) / 2,
            "accuracy": sklearn_metrics.accuracy_score(y_true=gt[inside], y_pred=pred[inside]),
            "roc_auc": sklearn_metrics.roc_auc_score(gt[inside], score[inside]) if both else None,
        }
    return aggregates


@pytest.mark.parametrize("seed", range(25))
def test_every_official_key_and_value_agrees_with_scikit_learn(seed: int) -> None:
    """Random sets: up to 16 patches per stack, 4 domains, rare atypical figures, confidences rounded to two
    digits so that ties are frequent; domains may hold one class only."""
    rng = np.random.default_rng(seed)
    truth, predictions = {}, {}
    for i in range(int(rng.integers(5, 40))):
        n = int(rng.integers(1, 17))
        labels = (rng.random(n) < 0.2).astype(np.int64)
        labels[0] = i % 2  # both classes overall
        truth[f"stack_{i}.tiff"] = Stack(labels=labels, domains=rng.integers(0, 4, n))
        confidences = np.round(np.clip(labels * 0.3 + rng.random(n) * 0.7, 0, 1), 2)
        predictions[f"stack_{i}.tiff"] = StackPrediction(
            classes=(confidences >= 0.5).astype(np.int64) ^ (rng.random(n) < 0.1), confidences=confidences
        )
    ours = evaluate_classification(truth, predictions).to_dict()["aggregates"]
    official = _official(truth, predictions)
    assert list(ours) == list(official)
    for key, value in official.items():
        if isinstance(value, dict):
            assert ours[key] == value, key
        else:
            assert ours[key] == value, key  # the same floats, not merely close


def test_json_directory_and_csv_predictions_read_the_same(tmp_path: Path) -> None:
    (tmp_path / "gt.json").write_text(
        json.dumps(
            [
                {"image": "stack_1.tiff", "labels": ["normal", "atypical"], "tumordomains": [1, 1]},
                {"image": "stack_2.tiff", "labels": ["atypical"], "tumordomains": [6]},
            ]
        )
    )
    truth = read_ground_truth(tmp_path / "gt.json")
    outputs = {
        "stack_1.tiff": [{"class": "normal", "confidence": 0.2}, {"class": "atypical", "confidence": 0.9}],
        "stack_2.tiff": [{"class": "normal", "confidence": 0.4}],
    }
    (tmp_path / "p.json").write_text(json.dumps(outputs))
    directory = tmp_path / "outputs"
    directory.mkdir()
    for name, items in outputs.items():
        (directory / f"{Path(name).stem}.json").write_text(json.dumps(items))
    (tmp_path / "p.csv").write_text(
        "image,index,class,confidence\n"
        "stack_1.tiff,1,atypical,0.9\nstack_1.tiff,0,normal,0.2\nstack_2.tiff,0,normal,0.4\n"
    )
    read = [read_predictions(tmp_path / name, patch_counts(truth)) for name in ("p.json", "outputs", "p.csv")]
    for other in read[1:]:
        for name in truth:
            np.testing.assert_array_equal(other[name].classes, read[0][name].classes)
            np.testing.assert_array_equal(other[name].confidences, read[0][name].confidences)
    report = evaluate_classification(truth, read[0]).to_dict()
    assert report["case"] == {
        "stack_1.tiff": {"tp": 1, "fp": 0, "fn": 0, "tn": 1},
        "stack_2.tiff": {"tp": 0, "fp": 0, "fn": 1, "tn": 0},
    }
    (tmp_path / "partial.json").write_text(json.dumps({"stack_1.tiff": outputs["stack_1.tiff"]}))
    with pytest.raises(FormatError, match=r"no output for 1 stack\(s\): stack_2.tiff"):
        read_predictions(tmp_path / "partial.json", patch_counts(truth))
    (tmp_path / "bad.json").write_text(json.dumps([{"image": "x", "labels": ["mitosis"], "tumordomains": [1]}]))
    with pytest.raises(FormatError, match="'labels' must be a list of 'normal' / 'atypical'"):
        read_ground_truth(tmp_path / "bad.json")


def test_bootstrap_intervals_resample_stacks_and_are_seeded() -> None:
    rng = np.random.default_rng(1)
    truth = {f"s{i}": Stack(labels=rng.integers(0, 2, 8), domains=np.array([i % 2] * 8)) for i in range(30)}
    predictions = {
        name: StackPrediction(classes=np.where(rng.random(8) < 0.8, s.labels, 1 - s.labels), confidences=rng.random(8))
        for name, s in truth.items()
    }
    first = evaluate_classification(truth, predictions, bootstrap=500, seed=3)
    again = evaluate_classification(truth, predictions, bootstrap=500, seed=3)
    assert first.overall.ci95 == again.overall.ci95
    assert first.overall.ci95 is not None
    assert first.overall.balanced_accuracy is not None
    low, high = first.overall.ci95
    assert low <= first.overall.balanced_accuracy <= high
    assert all(math.isfinite(v) for s in first.domains.values() for v in (s.ci95 or ()))
    assert evaluate_classification(truth, predictions).overall.ci95 is None


_OUTPUT = '[{"class": "normal", "confidence": 0.25}]'


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"s.tiff": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "stack 's.tiff': JSON nested too deeply"),
        (f'{{"s.tiff": {_OUTPUT}, "s.tiff": {_OUTPUT}}}'.encode(), "stack 's.tiff' is given twice"),
        (
            b'{"s.tiff": [{"class": "normal", "class": "atypical", "confidence": 0.5}]}',
            "stack 's.tiff': key 'class' is given twice in one object",
        ),
        (b'{"s.tiff": [{"class": "normal", "confidence": NaN}]}', "invalid JSON"),
        (b"[]", "expected a JSON object mapping each stack image to its outputs"),
        (b"", "invalid JSON"),
        (b"image,index,class,confidence\ns.tiff,0,normal," + b"1" * 200_000 + b"\n", "invalid CSV"),
    ],
    ids=["nested-100000", "stack-twice", "class-twice", "nan", "a-list", "empty", "huge-csv-field"],
)
def test_the_reader_is_strict_bounded_and_names_the_participants_file(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / ("upload-7tg14dpi.csv" if content.startswith(b"image,") else "upload-7tg14dpi.json")
    path.write_bytes(content)
    with pytest.raises(FormatError) as caught:
        read_predictions(path, {"s.tiff": 1}, source="my-outputs.json")
    assert message in str(caught.value)
    assert str(caught.value).startswith("my-outputs.json: ")
    assert "upload-7tg14dpi" not in str(caught.value)


@pytest.mark.parametrize("suffix", [".json", ".csv"])
def test_a_byte_order_mark_is_accepted(tmp_path: Path, suffix: str) -> None:
    body = f'{{"s.tiff": {_OUTPUT}}}' if suffix == ".json" else "image,index,class,confidence\ns.tiff,0,normal,0.25\n"
    path = tmp_path / f"p{suffix}"
    path.write_bytes(b"\xef\xbb\xbf" + body.encode())
    read = read_predictions(path, {"s.tiff": 1})
    assert read["s.tiff"].confidences.tolist() == [0.25]
