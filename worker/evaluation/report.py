"""The scoring result and its JSON form (a drop-in for the official metrics.json plus our keys). numpy only.

Official keys: "case" (per-case true_positives, false_negatives, false_positives) and "aggregates" (precision,
recall, f1_score, and AP under the midog2022 rules). Ours, which never clash with those: "groups" (the same
numbers per group label), "ci95" beside an F1 when a bootstrap ran, aggregates' counts, worst_group_f1 and
group_f1_spread (domain generalisation), optional "optimal_matching", and "meta" (rules and settings).

Under the midog2025 rules "aggregates" opens with the official 2025 keys, in the official order: precision,
recall, f1_score, froc_auc, AP; tumor_<domain>_precision|recall|f1|AP|froc_auc for every tumour domain present
(integer domains in numeric order); roi_type_<type>_... for all three roi types. A roi type without cases gets
the official evaluator's values: precision 0, recall 0, F1 1.0 (eps / eps), AP -1 and FROC NaN. NaN is not
JSON: an undefined FROC score (no case or no detection) is written as null, in aggregates and in groups.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from worker.evaluation.formulas import prf
from worker.evaluation.matching import Counts
from worker.evaluation.types import ROI_TYPE, ROI_TYPES, TUMOR_DOMAIN, Rules

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Scores:
    """Micro-summed counts and the metrics computed once from them, for the whole set or one group."""

    tp: int
    fp: int
    fn: int
    precision: float
    recall: float
    f1: float
    ap: float | None = None
    ci95: tuple[float, float] | None = None
    n_cases: int = 0
    froc: float | None = None  # midog2025 only; NaN where undefined

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "true_positives": self.tp,
            "false_positives": self.fp,
            "false_negatives": self.fn,
            "precision": self.precision,
            "recall": self.recall,
            "f1_score": self.f1,
        }
        if self.ap is not None:
            out["AP"] = self.ap
        if self.froc is not None:
            out["froc_auc"] = _json_float(self.froc)
        if self.ci95 is not None:
            out["ci95"] = list(self.ci95)
        out["cases"] = self.n_cases
        return out


def _json_float(value: float) -> float | None:
    """NaN (an undefined FROC score) as None, so the document stays valid JSON (null)."""
    return None if math.isnan(value) else value


def _domain_order(value: str) -> tuple[int, int, str]:
    """Integer tumour domains in numeric order (as numpy.unique sorts them officially), then the others."""
    try:
        return 0, int(value), ""
    except ValueError:
        return 1, 0, value


def official_2025_aggregates(overall: Scores, groups: dict[str, Scores]) -> dict[str, Any]:
    """The official MIDOG 2025 Track 1 aggregate keys, in the official order (module docstring)."""
    out: dict[str, Any] = {
        "precision": overall.precision,
        "recall": overall.recall,
        "f1_score": overall.f1,
        "froc_auc": _json_float(math.nan if overall.froc is None else overall.froc),
        "AP": overall.ap,
    }
    prefix = f"{TUMOR_DOMAIN}="
    domains = sorted((label[len(prefix) :] for label in groups if label.startswith(prefix)), key=_domain_order)
    empty_p, empty_r, empty_f1 = (float(v) for v in prf(0, 0, 0, Rules.MIDOG2025))
    absent = Scores(tp=0, fp=0, fn=0, precision=empty_p, recall=empty_r, f1=empty_f1, ap=-1.0, froc=math.nan)
    blocks = [(f"tumor_{d}", groups[prefix + d]) for d in domains]
    blocks += [(f"roi_type_{r}", groups.get(f"{ROI_TYPE}={r}", absent)) for r in ROI_TYPES]
    for key, s in blocks:
        out[f"{key}_precision"] = s.precision
        out[f"{key}_recall"] = s.recall
        out[f"{key}_f1"] = s.f1
        out[f"{key}_AP"] = s.ap
        out[f"{key}_froc_auc"] = _json_float(math.nan if s.froc is None else s.froc)
    return out


@dataclass(frozen=True, slots=True)
class Report:
    """Everything one scoring run produced; `to_dict()` is the metrics.json document."""

    case_names: list[str]
    case_counts: IntArray  # (n_cases, 3) [TP, FP, FN], rows in case_names order
    overall: Scores
    groups: dict[str, Scores]
    rules: str
    radius_mm: float
    missing_cases: str
    bootstrap_resamples: int = 0
    seed: int | None = None
    optimal: Counts | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def cases(self) -> dict[str, Counts]:
        return {
            name: Counts(int(tp), int(fp), int(fn))
            for name, (tp, fp, fn) in zip(self.case_names, self.case_counts.tolist(), strict=True)
        }

    def worst_group(self) -> tuple[str, float] | None:
        if not self.groups:
            return None
        label = min(self.groups, key=lambda g: self.groups[g].f1)
        return label, self.groups[label].f1

    def to_dict(self) -> dict[str, Any]:
        aggregates = self.overall.to_dict()
        if self.rules == Rules.MIDOG2025:
            aggregates = {**official_2025_aggregates(self.overall, self.groups), **aggregates}
        worst = self.worst_group()
        if worst is not None:
            f1s = [s.f1 for s in self.groups.values()]
            aggregates["worst_group"] = worst[0]
            aggregates["worst_group_f1"] = worst[1]
            aggregates["group_f1_spread"] = max(f1s) - min(f1s)
        if self.optimal is not None:
            aggregates["optimal_matching"] = {
                "true_positives": self.optimal.tp,
                "false_positives": self.optimal.fp,
                "false_negatives": self.optimal.fn,
            }
        return {
            "case": {
                name: {"true_positives": c.tp, "false_negatives": c.fn, "false_positives": c.fp}
                for name, c in self.cases.items()
            },
            "aggregates": aggregates,
            "groups": {label: s.to_dict() for label, s in self.groups.items()},
            "meta": {
                "rules": self.rules,
                "radius_mm": self.radius_mm,
                "missing_cases": self.missing_cases,
                "bootstrap": {"resamples": self.bootstrap_resamples, "seed": self.seed},
                "warnings": self.warnings,
            },
        }
