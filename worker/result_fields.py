"""The metric fields of a result: one list from which the Result table's metric columns (app.tables), the API
schemas (a submission's result, a leaderboard entry), the results CSV of the organisers, the leaderboard CSV
and the organisers' result view are derived. Adding a metric means: compute it in the scoring core, append it
here, write a migration that adds its column. The columns keep the names and types listed here, so the
migrations and the model agree (tests/app/test_migrations.py).

Rules of the list:
- `name` is the column, the JSON key and the CSV header; the order is the order of the JSON keys and of the
  organisers' results CSV.
- `kind` is "int" (a count, never null) or "float"; `nullable` says whether a result may lack it (AP of a
  classification phase, an interval of a phase scored without bootstrap, a classification metric of a
  detection phase). A nullable field defaults to null in the schemas.
- `task` says which phases fill it: "detection" fields are filled for every result (a classification phase
  counts its atypical figures as detections), "classification" ones only by Track 2 phases.
- `board_interval`: the leaderboard shows the metric's 95% bootstrap interval beside it, as `<name>_ci_low`
  and `<name>_ci_high`, read from the result's `intervals`.
- `format` is how a person reads it: "count" (an integer) or "score" (three decimals); `label` is its name
  in the command-line client's tables; `interval_of` marks an end of another field's interval, shown beside
  that field rather than as a column.

Standard library only: app.tables, the API and the worker all read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class ResultField:
    name: str
    kind: Literal["int", "float"]
    nullable: bool
    description: str
    format: Literal["count", "score"]
    # how a person names it (a column of the command-line client's tables)
    label: str = ""
    task: Literal["detection", "classification"] = "detection"
    board_interval: bool = False
    # an end of another field's interval (shown beside that field, never as a column of its own)
    interval_of: str | None = None

    @property
    def python_type(self) -> type[int] | type[float]:
        return int if self.kind == "int" else float


RESULT_FIELDS: tuple[ResultField, ...] = (
    ResultField("tp", "int", False, "True positives: detections matched to a ground-truth figure.", "count", "TP"),
    ResultField("fp", "int", False, "False positives: detections matched to no ground-truth figure.", "count", "FP"),
    ResultField("fn", "int", False, "False negatives: ground-truth figures no detection matched.", "count", "FN"),
    ResultField("precision", "float", False, "tp / (tp + fp), pooled over all cases.", "score", "precision"),
    ResultField("recall", "float", False, "tp / (tp + fn), pooled over all cases.", "score", "recall"),
    ResultField("f1", "float", False, "F1 of the pooled counts (MIDOG's ranking metric).", "score", "F1"),
    ResultField("ap", "float", True, "Average precision over the detection confidences.", "score", "AP"),
    ResultField(
        "f1_ci_low", "float", True, "Lower end of F1's 95% bootstrap interval over cases.", "score", interval_of="f1"
    ),
    ResultField(
        "f1_ci_high", "float", True, "Upper end of F1's 95% bootstrap interval over cases.", "score", interval_of="f1"
    ),
    ResultField(
        "balanced_accuracy",
        "float",
        True,
        "Classification phases: the mean of sensitivity and specificity, atypical figures positive.",
        "score",
        "balanced acc.",
        task="classification",
        board_interval=True,
    ),
    ResultField(
        "roc_auc",
        "float",
        True,
        "Classification phases: ROC AUC of the confidences.",
        "score",
        "ROC AUC",
        task="classification",
    ),
)

METRIC_NAMES: tuple[str, ...] = tuple(f.name for f in RESULT_FIELDS)

# The leaderboard CSV leads with the headline metric and its interval; every other field follows the
# provenance columns in the order of RESULT_FIELDS (so an added metric lands at the end).
BOARD_CSV_LEADING: tuple[str, ...] = ("f1", "f1_ci_low", "f1_ci_high", "precision", "recall", "ap", "tp", "fp", "fn")


def fields_of(task: str | None = None) -> tuple[ResultField, ...]:
    """The fields in list order; those a `task` fills when one is named."""
    return tuple(f for f in RESULT_FIELDS if task is None or f.task == task)


def board_csv_trailing() -> tuple[str, ...]:
    """The leaderboard CSV's metric columns after the provenance columns."""
    return tuple(name for name in METRIC_NAMES if name not in BOARD_CSV_LEADING)


def shown_fields(task: str) -> tuple[ResultField, ...]:
    """The fields a `task` fills that are shown as columns (interval ends go beside their field)."""
    return tuple(f for f in fields_of(task) if f.interval_of is None)


def interval_ends(name: str) -> tuple[str, str] | None:
    """The (low, high) fields of `name`'s interval, where the list has them."""
    ends = [f.name for f in RESULT_FIELDS if f.interval_of == name]
    low = next((e for e in ends if e.endswith("_low")), None)
    high = next((e for e in ends if e.endswith("_high")), None)
    return (low, high) if low and high else None
