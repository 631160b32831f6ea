"""Scoring of a prediction set against a ground truth: counts per case, per group and overall. numpy only.

Rules (docs/scoring.md: Which points count, Aggregation, Missing and unknown cases):
- midog2022 (default): only points named "mitotic figure" or unnamed count for F1, with z set to 0; every point
  counts for AP (missing probability = 0.5). midog2021: every point counts for F1; no AP.
- midog2025 (Track 1): F1 and AP as midog2022 (io.py has already refused unnamed points); every point must
  have a probability and every case a tumour domain and a roi type; plus the FROC score (froc.py) of the whole
  set and of every group, each over its own cases.
- TP, FP and FN are summed over cases (micro) and the metrics computed once from the sums, overall and within
  every group; a case may belong to several groups.
- A ground-truth case without predictions: MissingCases.ERROR rejects, FN scores it with no predictions, SKIP
  leaves it out (the official behaviour). Predictions for images outside the ground truth are rejected, except
  under SKIP, which ignores them with a warning.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from worker.evaluation.ap import rank_and_match
from worker.evaluation.bootstrap import f1_interval
from worker.evaluation.errors import FormatError
from worker.evaluation.formulas import prf
from worker.evaluation.froc import froc_scores
from worker.evaluation.io import check_labels_2025, resolve_names
from worker.evaluation.matching import Counts, match_cases
from worker.evaluation.report import IntArray, Report, Scores
from worker.evaluation.types import (
    DEFAULT_RADIUS_MM,
    CasePredictions,
    FloatArray,
    GroundTruth,
    MissingCases,
    Rules,
)

GroupsArg = Mapping[str, str | Sequence[str]] | None


def _names(names: list[str], limit: int = 10) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _align(
    gt: GroundTruth, predictions: Mapping[str, CasePredictions], missing: MissingCases, warnings: list[str]
) -> tuple[list[str], list[CasePredictions]]:
    """Case names to score (ground-truth order) and their predictions, per the missing-case policy."""
    resolved, unknown = resolve_names(predictions, gt.cases)
    if unknown:
        if missing != MissingCases.SKIP:
            raise FormatError(f"predictions for image(s) not in the ground truth: {_names(sorted(unknown))}")
        warnings.append(
            f"ignored predictions for {len(unknown)} image(s) not in the ground truth: {_names(sorted(unknown))}"
        )
    absent = [name for name in gt.cases if name not in resolved]
    if absent and missing == MissingCases.ERROR:
        raise FormatError(f"missing predictions for {len(absent)} image(s): {_names(absent)}")
    if absent and missing == MissingCases.SKIP:
        warnings.append(f"skipped {len(absent)} case(s) without predictions: {_names(absent)}")
        names = [name for name in gt.cases if name in resolved]
    else:
        names = list(gt.cases)
    return names, [resolved.get(name, CasePredictions.empty()) for name in names]


def _group_members(gt: GroundTruth, names: list[str], groups: GroupsArg) -> dict[str, np.ndarray]:
    """Group label -> boolean mask over the scored cases (given groups first, then ground-truth labels)."""
    per_case: dict[str, list[str]] = {name: [] for name in names}
    if groups is not None:
        by_case, _ = resolve_names(groups, names, source="groups")
        unlabelled = [name for name in names if name not in by_case]
        if unlabelled:
            raise FormatError(f"no group label for {len(unlabelled)} case(s): {_names(unlabelled)}", source="groups")
        for name in names:
            value = by_case[name]
            per_case[name].extend([value] if isinstance(value, str) else list(value))
    derived = gt.group_map()
    for name in names:
        per_case[name].extend(derived.get(name, []))
    labels = list(dict.fromkeys(label for case_labels in per_case.values() for label in case_labels))
    return {label: np.array([label in per_case[name] for name in names], dtype=bool) for label in labels}


def _scores(
    counts: IntArray,
    rules: Rules,
    ap: float | None,
    resamples: int,
    seed: int | tuple[int, ...],
    froc: float | None = None,
) -> Scores:
    tp, fp, fn = (int(v) for v in counts.sum(axis=0))
    precision, recall, f1 = prf(tp, fp, fn, rules)
    return Scores(
        tp=tp,
        fp=fp,
        fn=fn,
        precision=float(precision),
        recall=float(recall),
        f1=float(f1),
        ap=ap,
        ci95=f1_interval(counts, resamples=resamples, seed=seed, rules=rules),
        n_cases=len(counts),
        froc=froc,
    )


def _require_probabilities(names: list[str], preds: list[CasePredictions]) -> None:
    """midog2025: the FROC score ranks every point by its probability, so none may be missing."""
    for name, p in zip(names, preds, strict=True):
        missing = np.flatnonzero(np.isnan(p.probabilities))
        if len(missing):
            raise FormatError(
                "midog2025 needs a probability for every point", case=name, index=int(missing[0]), field="probability"
            )


def evaluate(
    gt: GroundTruth,
    predictions: Mapping[str, CasePredictions],
    *,
    groups: GroupsArg = None,
    rules: Rules | str = Rules.MIDOG2022,
    missing_cases: MissingCases | str = MissingCases.ERROR,
    radius_mm: float = DEFAULT_RADIUS_MM,
    bootstrap: int = 0,
    seed: int = 0,
    optimal: bool = False,
) -> Report:
    """Scores predictions against the ground truth by the module rules.

    groups maps case names (or their stems) to one label or several; labels of the 2025 ground truth become
    groups on their own. bootstrap > 0 adds seeded 95% intervals of every F1. optimal adds the counts of a
    maximum-cardinality matching as an extra.
    """
    rules = Rules(rules)
    missing = MissingCases(missing_cases)
    if not (radius_mm > 0 and np.isfinite(radius_mm)):
        raise FormatError(f"radius must be a positive number of mm, got {radius_mm!r}")
    warnings: list[str] = []
    names, preds = _align(gt, predictions, missing, warnings)
    gt_points = [gt.cases[name] for name in names]
    like_2022 = rules in (Rules.MIDOG2022, Rules.MIDOG2025)
    if rules == Rules.MIDOG2025:
        check_labels_2025(gt, names)
        _require_probabilities(names, preds)
    if like_2022:
        f1_points: list[FloatArray] = []
        for p in preds:
            kept = p.points[p.mitotic].copy()
            kept[:, 2] = 0.0
            f1_points.append(kept)
    else:
        f1_points = [p.points for p in preds]
    counts = match_cases(gt_points, f1_points, radius_mm)
    ranked = (
        rank_and_match(gt_points, [p.points for p in preds], [p.probabilities for p in preds]) if like_2022 else None
    )
    members = _group_members(gt, names, groups)
    froc: list[float | None] = [None] * (len(members) + 1)
    if rules == Rules.MIDOG2025:  # the whole set first, then every group; one pass serves them all
        froc = list(
            froc_scores(
                gt_points,
                [p.points for p in preds],
                [p.probabilities for p in preds],
                [None, *members.values()],
                radius_mm,
            )
        )
    overall = _scores(counts, rules, ranked.average_precision() if ranked else None, bootstrap, seed, froc[0])
    group_scores = {}
    for index, (label, mask) in enumerate(members.items()):
        group_scores[label] = _scores(
            counts[mask],
            rules,
            ranked.average_precision(mask) if ranked else None,
            bootstrap,
            (seed, index + 1),
            froc[index + 1],
        )
    optimal_counts = None
    if optimal:
        tp, fp, fn = match_cases(gt_points, f1_points, radius_mm, method="optimal").sum(axis=0).tolist()
        optimal_counts = Counts(tp, fp, fn)
    return Report(
        case_names=names,
        case_counts=counts,
        overall=overall,
        groups=group_scores,
        rules=rules.value,
        radius_mm=radius_mm,
        missing_cases=missing.value,
        bootstrap_resamples=bootstrap,
        seed=seed if bootstrap else None,
        optimal=optimal_counts,
        warnings=warnings,
    )
