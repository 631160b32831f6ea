"""The numbers behind each plot of the ranking analysis as tables (one CSV per plot): header and rows from the
analysis document of app.leaderboard.analysis. Pure functions; must not import FastAPI."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Table = tuple[list[str], list[list[object]]]


def _label(entry: dict[str, Any]) -> list[object]:
    return [entry["submission_id"], entry["team_name"], entry["method_name"]]


def _ranked(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [doc["entries"][i] for i in doc.get("ranked", [])]


def ranks_table(doc: dict[str, Any]) -> Table:
    """Blob plot: per ranked entry its rank, median bootstrap rank, 95% rank interval and rank frequencies."""
    ranking = doc.get("ranking") or {}
    entries = _ranked(doc)
    if not ranking.get("available"):
        return ["submission_id", "team", "method"], []
    n = len(entries)
    header = ["submission_id", "team", "method", "rank", "median_rank", "rank_ci_low", "rank_ci_high"]
    header += [f"share_rank_{r}" for r in range(1, n + 1)]
    rows = []
    for e, entry in enumerate(entries):
        frequencies = ranking["frequencies"][e]
        total = sum(frequencies) or 1
        low, high = ranking["rank_ci95"][e]
        rows.append(
            [*_label(entry), ranking["ranks"][e], ranking["median_rank"][e], low, high]
            + [round(f / total, 4) for f in frequencies]
        )
    return header, rows


def significance_table(doc: dict[str, Any]) -> Table:
    """Significance map: one row per ordered pair, "row entry better than column entry"."""
    header = ["better_submission_id", "better_team", "worse_submission_id", "worse_team", "p", "p_holm", "significant"]
    sig = doc.get("significance")
    if not sig:
        return header, []
    entries = _ranked(doc)
    rows: list[list[object]] = []
    for i, a in enumerate(entries):
        for j, b in enumerate(entries):
            if i != j:
                p, adjusted = sig["pvalues"][i][j], sig["adjusted"][i][j]
                rows.append(
                    [
                        a["submission_id"],
                        a["team_name"],
                        b["submission_id"],
                        b["team_name"],
                        p,
                        adjusted,
                        sig["better"][i][j],
                    ]
                )
    return header, rows


def rank_aggregation_table(doc: dict[str, Any]) -> Table:
    """Aggregate-then-rank beside rank-then-aggregate, with each group's rank."""
    comparison = doc.get("rank_then_aggregate")
    groups = doc.get("groups", [])
    header = [
        "submission_id",
        "team",
        "method",
        "pooled_f1",
        "aggregate_then_rank",
        "mean_group_rank",
        "rank_then_aggregate",
    ] + [f"rank[{g}]" for g in groups]
    if not comparison:
        return header, []
    rows = []
    for e, entry in enumerate(_ranked(doc)):
        rows.append(
            [
                *_label(entry),
                comparison["pooled_f1"][e],
                comparison["aggregate_ranks"][e],
                comparison["mean_group_rank"][e],
                comparison["rank_then_aggregate_ranks"][e],
                *list(comparison["group_ranks"][e]),
            ]
        )
    return header, rows


def heatmap_table(doc: dict[str, Any]) -> Table:
    """Heat map: F1 of every entry on every shown group with its 95% interval."""
    header = ["submission_id", "team", "method", "baseline", "group", "cases", "f1", "f1_ci_low", "f1_ci_high"]
    heat = doc.get("heatmap")
    if not heat:
        return header, []
    rows = []
    for e, entry in enumerate(doc["entries"]):
        for g, group in enumerate(doc["groups"]):
            low, high = heat["ci95"][e][g]
            rows.append(
                [
                    *_label(entry),
                    entry["is_baseline"],
                    group,
                    doc["cases_per_group"][group],
                    heat["f1"][e][g],
                    low,
                    high,
                ]
            )
    return header, rows


def generalisation_table(doc: dict[str, Any]) -> Table:
    """Seen versus unseen groups: pooled F1 on each side and the gap, with 95% intervals."""
    header = [
        "submission_id",
        "team",
        "method",
        "baseline",
        "seen_f1",
        "seen_ci_low",
        "seen_ci_high",
        "unseen_f1",
        "unseen_ci_low",
        "unseen_ci_high",
        "gap",
        "gap_ci_low",
        "gap_ci_high",
    ]
    rows_in = doc.get("generalisation")
    if not rows_in:
        return header, []
    rows = []
    for entry, gap in zip(doc["entries"], rows_in, strict=True):
        row: list[object] = [*_label(entry), entry["is_baseline"]]
        for side in ("seen", "unseen", "gap"):
            value = gap["gap"] if side == "gap" else gap[f"{side}_f1"]
            low, high = gap[f"{side}_ci95"] or (None, None)
            row += [value, low, high]
        rows.append(row)
    return header, rows


TABLES: dict[str, Callable[[dict[str, Any]], Table]] = {
    "ranks": ranks_table,
    "significance": significance_table,
    "rank-aggregation": rank_aggregation_table,
    "heatmap": heatmap_table,
    "generalisation": generalisation_table,
}
