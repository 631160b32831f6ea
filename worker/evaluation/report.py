"""The scoring result and its JSON form (a drop-in for the official metrics.json plus our keys). numpy only.

Official keys: "case" (per-case true_positives, false_negatives, false_positives) and "aggregates" (precision,
recall, f1_score, and AP under the midog2022 rules). Ours, which never clash with those: "groups" (the same
numbers per group label), "ci95" beside an F1 when a bootstrap ran, aggregates' counts, worst_group_f1 and
group_f1_spread (domain generalisation), optional "optimal_matching", and "meta" (rules and settings).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from worker.evaluation.matching import Counts

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
        if self.ci95 is not None:
            out["ci95"] = list(self.ci95)
        out["cases"] = self.n_cases
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
