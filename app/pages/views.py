"""View models of the public pages: formatting of leaderboard entries and the per-group chart (SVG data) of the
board's group metric (F1 for detection, balanced accuracy for classification).

Pure functions over the leaderboard schema; must not import FastAPI, the database or the worker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from app.leaderboard.schemas import LeaderboardEntry, LeaderboardRead

# Okabe-Ito colours: distinguishable with the common colour-vision deficiencies. The same eight, in this order,
# are the classes .c0 to .c7 of static/style.css (pages carry no inline style: the CSP allows none).
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#8C6D1F")


def fmt(value: float | None, digits: int = 3) -> str:
    """A metric for display; a missing value is an en dash."""
    return "–" if value is None else f"{value:.{digits}f}"


def fmt_date(value: datetime | None) -> str:
    return "–" if value is None else value.strftime("%Y-%m-%d %H:%M UTC")


@dataclass(frozen=True)
class Columns:
    """What a board's metric columns show: F1 and AP for detection; balanced accuracy and ROC AUC for
    classification. `main` and `second` name LeaderboardEntry fields and the cells' data-key."""

    main: str
    main_label: str
    group_label: str
    second: str
    second_label: str


DETECTION_COLUMNS = Columns("f1", "F1", "F1", "ap", "AP")
CLASSIFICATION_COLUMNS = Columns("balanced_accuracy", "Balanced accuracy", "Bal. acc.", "roc_auc", "ROC AUC")


def board_columns(board: LeaderboardRead) -> Columns:
    return CLASSIFICATION_COLUMNS if board.task == "classification" else DETECTION_COLUMNS


@dataclass(frozen=True)
class EntryView:
    entry: LeaderboardEntry
    columns: Columns
    group_values: dict[str, float | None]  # the board's group metric per group label
    worst_value: float | None
    worst_group: str | None
    colour_index: int

    @property
    def main(self) -> float | None:
        value: float | None = getattr(self.entry, self.columns.main)
        return value

    @property
    def main_ci(self) -> tuple[float, float] | None:
        low = getattr(self.entry, f"{self.columns.main}_ci_low")
        high = getattr(self.entry, f"{self.columns.main}_ci_high")
        return None if low is None or high is None else (low, high)

    @property
    def second(self) -> float | None:
        value: float | None = getattr(self.entry, self.columns.second)
        return value

    @property
    def colour(self) -> str:
        return PALETTE[self.colour_index]

    @property
    def label(self) -> str:
        method = f" – {self.entry.method_name}" if self.entry.method_name else ""
        return f"{self.entry.team_name}{method}"


def entry_views(board: LeaderboardRead) -> list[EntryView]:
    views: list[EntryView] = []
    columns = board_columns(board)
    for i, entry in enumerate(board.entries):
        group_values: dict[str, float | None] = {}
        for label in board.group_labels:
            value = entry.groups.get(label, {}).get(board.group_metric)
            group_values[label] = float(value) if isinstance(value, int | float) else None
        present = {k: v for k, v in group_values.items() if v is not None}
        worst_group = min(present, key=lambda k: present[k]) if present else None
        views.append(
            EntryView(
                entry=entry,
                columns=columns,
                group_values=group_values,
                worst_value=present[worst_group] if worst_group is not None else None,
                worst_group=worst_group,
                colour_index=i % len(PALETTE),
            )
        )
    return views


@dataclass(frozen=True)
class ChartPoint:
    x: float
    y: float
    group: str
    value: float


@dataclass(frozen=True)
class ChartSeries:
    view: EntryView
    points: list[ChartPoint]
    dashed: bool

    @property
    def polyline(self) -> str:
        return " ".join(f"{p.x:.1f},{p.y:.1f}" for p in self.points)


@dataclass(frozen=True)
class Chart:
    """A line chart: one line per entry across the groups (scanners), the metric from 0 to 1 on the y axis."""

    width: int
    height: int
    left: int
    top: int
    plot_width: int
    plot_height: int
    x_ticks: list[tuple[float, str]]
    y_ticks: list[tuple[float, str]]
    series: list[ChartSeries] = field(default_factory=list)


def group_chart(board: LeaderboardRead, views: list[EntryView], *, width: int = 720, height: int = 320) -> Chart | None:
    """The chart of the group metric (F1, or balanced accuracy) per group; None when there is nothing to draw."""
    labels = board.group_labels
    if not labels or not views:
        return None
    left, top, right, bottom = 48, 16, 64, 48
    plot_w, plot_h = width - left - right, height - top - bottom
    step = plot_w / max(1, len(labels) - 1) if len(labels) > 1 else 0.0

    def x_of(i: int) -> float:
        return left + (i * step if len(labels) > 1 else plot_w / 2)

    def y_of(v: float) -> float:
        return top + plot_h * (1.0 - max(0.0, min(1.0, v)))

    series = []
    for view in views:
        points = [
            ChartPoint(x_of(i), y_of(v), label, v)
            for i, label in enumerate(labels)
            if (v := view.group_values.get(label)) is not None
        ]
        series.append(ChartSeries(view, points, dashed=view.entry.is_baseline))
    return Chart(
        width=width,
        height=height,
        left=left,
        top=top,
        plot_width=plot_w,
        plot_height=plot_h,
        x_ticks=[(x_of(i), label) for i, label in enumerate(labels)],
        y_ticks=[(y_of(v / 5), f"{v / 5:.1f}") for v in range(6)],
        series=series,
    )


def sort_value(value: Any) -> str:
    """The `data-sort` attribute of a cell: numbers as numbers, missing values sort last."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float):
        return repr(float(value))
    return str(value)
