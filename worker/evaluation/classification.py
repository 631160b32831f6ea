"""MIDOG 2025 Track 2: atypical versus normal mitotic figures, scored exactly as the official evaluator.

A case is a stack: a multi-page TIFF of up to 16 patches, each centred on a mitotic figure. The ground truth
gives each patch a label ("normal" or "atypical") and a tumour domain; a prediction for a stack is a list with
one item per patch, in page order: `{"class": "normal" | "atypical", "confidence": <float>}`.

Rules (docs/scoring.md, "MIDOG 2025 Track 2"):
- atypical is the positive class; TP, FP, FN, TN come from `class`; `confidence` is read as P(atypical)
  whatever `class` says (the official evaluator's reading);
- pooled over every patch of every stack: sensitivity TP/(TP+FN), specificity TN/(TN+FP), balanced accuracy
  their mean, accuracy (TP+TN)/all, ROC AUC on `confidence` (trapezoidal, ties as scikit-learn's
  roc_auc_score computes them: `roc_auc` below repeats its arithmetic);
- per tumour domain (sorted), the same five; a class without patches in a domain gives sensitivity or
  specificity 0.0 (scikit-learn's zero_division);
- where the official evaluator fails (no patch of a class overall, one class only for ROC AUC) the metric is
  None and `undefined` says why;
- validation as the official evaluator refuses: a list of the wrong length, an item that is not an object,
  without `class` or `confidence`, a class other than the two, a confidence that is not a float (JSON `1` is
  an integer and is refused, `1.0` is accepted); beyond it, a confidence that is not finite or outside [0, 1];
- reading as strict and bounded as the detection reader (worker.evaluation.jsonstream, shared): streamed
  one stack at a time with the depth limit in the same pass, a stack given twice or a key given twice in one
  item refused, a UTF-8 byte-order mark accepted; errors name the participant's file (`source`, never the
  server's temporary file) and the stack.

Ranking: overall balanced accuracy. Bootstrap intervals resample stacks. numpy and ijson only.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from worker.evaluation.bootstrap import resample_weights
from worker.evaluation.errors import FormatError
from worker.evaluation.jsonstream import object_entries, read_document

CLASSES = {"normal": 0, "atypical": 1}
# In the official metrics.json order: overall and per domain list them differently.
OVERALL_METRICS = ("sensitivity", "specificity", "balanced_accuracy", "roc_auc", "accuracy")
METRICS = ("sensitivity", "specificity", "balanced_accuracy", "accuracy", "roc_auc")
COUNTS = ("tp", "fp", "fn", "tn")

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Stack:
    """One stack's ground truth: a label (1 atypical, 0 normal) and a tumour domain per patch."""

    labels: IntArray
    domains: IntArray


@dataclass(frozen=True)
class StackPrediction:
    """One stack's output: the class (1 atypical) and the confidence of each patch, in page order."""

    classes: IntArray
    confidences: FloatArray


@dataclass
class ClassificationScores:
    """The five metrics of one set of patches, with the counts they come from; None where undefined."""

    tp: int
    fp: int
    fn: int
    tn: int
    sensitivity: float | None
    specificity: float | None
    balanced_accuracy: float | None
    accuracy: float | None
    roc_auc: float | None
    undefined: dict[str, str] = field(default_factory=dict)
    ci95: tuple[float, float] | None = None  # of the balanced accuracy

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in METRICS}


@dataclass
class ClassificationReport:
    overall: ClassificationScores
    domains: dict[str, ClassificationScores]
    stacks: dict[str, dict[str, int]]
    bootstrap_resamples: int = 0
    seed: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The official metrics.json keys (`overall_<metric>`, `domain_<k>`) plus counts, intervals and meta."""
        aggregates: dict[str, Any] = {f"overall_{name}": getattr(self.overall, name) for name in OVERALL_METRICS}
        for label, scores in self.domains.items():
            aggregates[f"domain_{label}"] = scores.as_dict()
        extras = {
            "counts": {name: getattr(self.overall, name) for name in ("tp", "fp", "fn", "tn")},
            "balanced_accuracy_ci95": list(self.overall.ci95) if self.overall.ci95 else None,
            "undefined": self.overall.undefined,
        }
        return {
            "case": self.stacks,
            "aggregates": aggregates,
            "overall": extras,
            "domains": {
                label: {
                    "counts": {name: getattr(s, name) for name in ("tp", "fp", "fn", "tn")},
                    "balanced_accuracy_ci95": list(s.ci95) if s.ci95 else None,
                    "undefined": s.undefined,
                }
                for label, s in self.domains.items()
            },
            "meta": {
                "task": "classification",
                "bootstrap": {"resamples": self.bootstrap_resamples, "seed": self.seed},
            },
        }


# --- reading ---------------------------------------------------------------------------------------------


def read_ground_truth(path: Path) -> dict[str, Stack]:
    """The official list `[{"image", "labels": [...], "tumordomains": [...]}]`, checked entry by entry."""
    data = read_document(path)
    if not isinstance(data, list):
        raise FormatError(f"{path.name}: expected a list of stacks ({{'image', 'labels', 'tumordomains'}})")
    truth: dict[str, Stack] = {}
    for index, entry in enumerate(data):
        where = f"{path.name}[{index}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("image"), str):
            raise FormatError(f"{where}: expected an object with 'image', 'labels' and 'tumordomains'")
        image = entry["image"]
        labels, domains = entry.get("labels"), entry.get("tumordomains")
        if not isinstance(labels, list) or not all(label in CLASSES for label in labels):
            raise FormatError(f"{where} ({image}): 'labels' must be a list of 'normal' / 'atypical'")
        if not isinstance(domains, list) or len(domains) != len(labels):
            raise FormatError(f"{where} ({image}): 'tumordomains' must give one domain per label")
        if not all(isinstance(d, int) and not isinstance(d, bool) for d in domains):
            raise FormatError(f"{where} ({image}): tumour domains must be integers")
        if image in truth:
            raise FormatError(f"{where}: stack {image!r} is given twice")
        truth[image] = Stack(
            labels=np.array([CLASSES[label] for label in labels], dtype=np.int64),
            domains=np.array(domains, dtype=np.int64),
        )
    return truth


def read_predictions(
    path: Path, patches: Mapping[str, int], *, source: str | None = None
) -> dict[str, StackPrediction]:
    """Predictions as a JSON object (stack image -> list), a directory of `<stack>.json` files (the image's
    name or its stem), or a CSV `image,index,class,confidence`; each list checked against its stack's patch
    count (`patches`: stack -> pages; every stack must have its output). `source` names the file in errors
    (default: its name); a JSON object is read one stack at a time and stops at the first fault."""
    name = source or path.name
    predictions: dict[str, StackPrediction] = {}

    def add(image: str, items: Any) -> None:
        if image not in patches:
            raise FormatError(f"stack {image!r} is not in the test set", source=name)
        if image in predictions:
            raise FormatError(f"stack {image!r} is given twice", source=name)
        predictions[image] = check_stack(image, items, expected=patches[image], source=name)

    if path.is_dir():
        for file in sorted(path.glob("*.json")):
            add(_stack_name(file.stem, patches), read_document(file, source=f"{name}/{file.name}"))
    elif path.suffix.lower() == ".csv":
        for image, items in _read_csv(path, name).items():
            add(image, items)
    else:
        try:
            with path.open("rb") as handle:
                entries = object_entries(handle, source=name, expected="mapping each stack image to its outputs")
                for image, items in entries:
                    add(image, items)
        except OSError as exc:
            raise FormatError(f"cannot be read ({exc.strerror})", source=name) from None
        except FormatError as exc:
            raise _stack_named(exc) from None
    missing = sorted(set(patches) - set(predictions))
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise FormatError(f"no output for {len(missing)} stack(s): {shown}", source=name)
    return predictions


def _stack_named(value: Any) -> Any:
    """A FormatError of the shared reader names the entry as a case; here it is a stack."""
    if isinstance(value, FormatError) and value.case is not None:
        return FormatError(f"stack {value.case!r}: {value.rule}", source=value.source)
    return value


def check_stack(image: str, items: Any, *, expected: int, source: str | None = None) -> StackPrediction:
    """One stack's output list, validated as the official evaluator validates it (plus confidences finite and
    in [0, 1])."""

    def refuse(rule: str) -> FormatError:
        return FormatError(rule, source=source)

    if not isinstance(items, list):
        raise refuse(f"{image}: expected a list with one {{'class', 'confidence'}} object per patch")
    if len(items) != expected:
        raise refuse(f"{image}: {len(items)} outputs for {expected} patches (one per patch, in page order)")
    classes = np.empty(expected, dtype=np.int64)
    confidences = np.empty(expected, dtype=np.float64)
    for index, item in enumerate(items):
        where = f"{image}[{index}]"
        if not isinstance(item, dict):
            raise refuse(f"{where}: each output must be an object with 'class' and 'confidence'")
        if "class" not in item or "confidence" not in item:
            raise refuse(f"{where}: each output needs 'class' and 'confidence'")
        if not isinstance(item["class"], str) or item["class"] not in CLASSES:
            raise refuse(f"{where}: class must be 'normal' or 'atypical', got {str(item['class'])[:40]!r}")
        confidence = item["confidence"]
        if not isinstance(confidence, float):
            shown = json.dumps(confidence)[:40] if isinstance(confidence, int | str | bool | None) else "an object"
            raise refuse(f"{where}: confidence must be a float (JSON {shown} is not; write e.g. 1.0)")
        if not math.isfinite(confidence) or not 0.0 <= confidence <= 1.0:
            raise refuse(f"{where}: confidence must be a finite number in [0, 1] (P(atypical)), got {confidence}")
        classes[index] = CLASSES[item["class"]]
        confidences[index] = confidence
    return StackPrediction(classes=classes, confidences=confidences)


def _read_csv(path: Path, name: str) -> dict[str, list[dict[str, Any]]]:
    rows: dict[str, dict[int, dict[str, Any]]] = {}
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:  # -sig: a byte-order mark is accepted
            reader = csv.DictReader(handle)
            if reader.fieldnames is None or not {"image", "index", "class", "confidence"} <= set(reader.fieldnames):
                raise FormatError("expected the columns image,index,class,confidence", source=name)
            for line, row in enumerate(reader, start=2):
                try:
                    index, confidence = int(row["index"]), float(row["confidence"])
                except (TypeError, ValueError):
                    raise FormatError(
                        f"line {line}: index must be an integer and confidence a number", source=name
                    ) from None
                stack = rows.setdefault(row["image"], {})
                if index in stack:
                    raise FormatError(f"line {line}: patch {index} of {row['image']} is given twice", source=name)
                stack[index] = {"class": row["class"], "confidence": confidence}
    except csv.Error as exc:
        raise FormatError(f"invalid CSV: {exc}", source=name) from None
    except UnicodeDecodeError:
        raise FormatError("not UTF-8 text", source=name) from None
    result: dict[str, list[dict[str, Any]]] = {}
    for image, stack in rows.items():
        if sorted(stack) != list(range(len(stack))):
            raise FormatError(f"the patches of {image} must be numbered 0 to {len(stack) - 1}", source=name)
        result[image] = [stack[i] for i in range(len(stack))]
    return result


def patch_counts(truth: Mapping[str, Stack]) -> dict[str, int]:
    """stack -> number of patches, from a ground truth."""
    return {name: len(stack.labels) for name, stack in truth.items()}


def _stack_name(stem: str, patches: Mapping[str, int]) -> str:
    if stem in patches:
        return stem
    matches = [image for image in patches if Path(image).stem == stem]
    return matches[0] if len(matches) == 1 else stem


# --- metrics ---------------------------------------------------------------------------------------------


def roc_auc(labels: IntArray, scores: FloatArray) -> float | None:
    """Area under the ROC curve of `scores` for `labels` (1 positive), None with a single class.

    The arithmetic of scikit-learn's roc_auc_score (binary): scores in descending order (stable), one point per
    distinct score, collinear points dropped, (0, 0) prepended, rates as counts over the last count,
    trapezoidal area; so the floats agree with it, ties included.
    """
    positives = int(labels.sum())
    if positives == 0 or positives == len(labels):
        return None
    order = np.argsort(scores, kind="mergesort")[::-1]
    y_score, y_true = scores[order], labels[order].astype(np.float64)
    distinct = np.where(np.diff(y_score))[0]
    thresholds = np.r_[distinct, y_true.size - 1]
    tps = np.cumsum(y_true, dtype=np.float64)[thresholds]
    fps = 1 + thresholds - tps
    if len(fps) > 2:
        keep = np.where(np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True])[0]
        fps, tps = fps[keep], tps[keep]
    tpr = np.r_[0.0, tps] / tps[-1]
    fpr = np.r_[0.0, fps] / fps[-1]
    return float(np.trapezoid(tpr, fpr))


def scores_of(truth: IntArray, classes: IntArray, confidences: FloatArray, *, pooled: bool) -> ClassificationScores:
    """The five metrics of one set of patches. `pooled`: the overall figures, where the official evaluator
    divides by zero for a class without patches (None here); per domain, scikit-learn's 0.0 instead."""
    tp = int(np.sum((classes == 1) & (truth == 1)))
    fp = int(np.sum((classes == 1) & (truth == 0)))
    fn = int(np.sum((classes == 0) & (truth == 1)))
    tn = int(np.sum((classes == 0) & (truth == 0)))
    undefined: dict[str, str] = {}
    sensitivity = _rate(tp, tp + fn, pooled, "sensitivity", "no atypical figure", undefined)
    specificity = _rate(tn, tn + fp, pooled, "specificity", "no normal figure", undefined)
    balanced = None if sensitivity is None or specificity is None else (sensitivity + specificity) / 2
    if balanced is None:
        undefined["balanced_accuracy"] = "sensitivity or specificity is undefined"
    accuracy = (tp + tn) / len(truth) if len(truth) else None
    auc = roc_auc(truth, confidences)
    if auc is None:
        undefined["roc_auc"] = "ROC AUC needs figures of both classes"
    return ClassificationScores(tp, fp, fn, tn, sensitivity, specificity, balanced, accuracy, auc, undefined)


def _rate(hits: int, total: int, pooled: bool, name: str, why: str, undefined: dict[str, str]) -> float | None:
    if total:
        return hits / total
    if pooled:
        undefined[name] = why
        return None
    return 0.0


def evaluate_classification(
    truth: Mapping[str, Stack],
    predictions: Mapping[str, StackPrediction],
    *,
    bootstrap: int = 0,
    seed: int = 0,
) -> ClassificationReport:
    """Score every stack of `truth` (its predictions validated already): pooled and per tumour domain."""
    names = list(truth)
    labels = np.concatenate([truth[n].labels for n in names]) if names else np.zeros(0, dtype=np.int64)
    domains = np.concatenate([truth[n].domains for n in names]) if names else np.zeros(0, dtype=np.int64)
    classes = np.concatenate([predictions[n].classes for n in names]) if names else np.zeros(0, dtype=np.int64)
    confidences = (
        np.concatenate([predictions[n].confidences for n in names]) if names else np.zeros(0, dtype=np.float64)
    )
    overall = scores_of(labels, classes, confidences, pooled=True)
    per_domain = {
        str(int(domain)): scores_of(
            labels[domains == domain], classes[domains == domain], confidences[domains == domain], pooled=False
        )
        for domain in np.sort(np.unique(domains))
    }
    stacks = {
        name: dict(zip(COUNTS, _counts(truth[name].labels, predictions[name].classes), strict=True)) for name in names
    }
    if bootstrap > 0 and names:
        overall.ci95 = _balanced_accuracy_interval(
            np.array([list(c.values()) for c in stacks.values()]), bootstrap, seed
        )
        for index, (label, scores) in enumerate(per_domain.items()):
            # the stacks holding patches of this domain, counted over those patches only
            counts = [
                _counts(truth[n].labels[inside], predictions[n].classes[inside])
                for n in names
                if (inside := truth[n].domains == int(label)).any()
            ]
            scores.ci95 = _balanced_accuracy_interval(np.array(counts), bootstrap, (seed, index + 1))
    return ClassificationReport(
        overall=overall,
        domains=per_domain,
        stacks=stacks,
        bootstrap_resamples=bootstrap,
        seed=seed if bootstrap else None,
    )


def _counts(labels: IntArray, classes: IntArray) -> list[int]:
    """TP, FP, FN, TN with atypical (1) positive."""
    return [
        int(np.sum((classes == 1) & (labels == 1))),
        int(np.sum((classes == 1) & (labels == 0))),
        int(np.sum((classes == 0) & (labels == 1))),
        int(np.sum((classes == 0) & (labels == 0))),
    ]


def _balanced_accuracy_interval(
    counts: npt.NDArray[np.int64], resamples: int, seed: int | tuple[int, ...]
) -> tuple[float, float] | None:
    """95% percentile interval of the balanced accuracy, resampling stacks (rows of TP, FP, FN, TN); a
    resample without a class counts its undefined rate as 0.0."""
    if len(counts) == 0:
        return None
    sums = resample_weights(len(counts), resamples, np.random.default_rng(seed)) @ counts.astype(np.float64)
    tp, fp, fn, tn = sums.T
    with np.errstate(divide="ignore", invalid="ignore"):
        sensitivity = np.where(tp + fn > 0, tp / (tp + fn), 0.0)
        specificity = np.where(tn + fp > 0, tn / (tn + fp), 0.0)
    low, high = np.percentile((sensitivity + specificity) / 2, [2.5, 97.5])
    return float(low), float(high)
