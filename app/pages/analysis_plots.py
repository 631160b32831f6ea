"""Server-rendered SVG plots of the ranking analysis (the analysis page and the offline report).

Rules: every plot is an <svg role="img"> with a title and a description naming what it shows, every mark has
a <title> with its numbers (read aloud, shown on hover), colour is never the only carrier of meaning (the
significance map marks cells with a sign, the heat map prints its values), and the colours are colour-blind
safe: Okabe-Ito for entries, viridis for the heat map. No inline style: the pages' CSP allows none. Pure
functions of the analysis document; must not import FastAPI, the database or the worker.
"""

from __future__ import annotations

from typing import Any

from markupsafe import Markup, escape

from app.pages.views import PALETTE

# viridis at 0, 0.1, ..., 1 (perceptually uniform, readable in grey and with colour-vision deficiencies)
VIRIDIS = (
    "#440154", "#482475", "#414487", "#355f8d", "#2a788e", "#21918c",
    "#22a884", "#44bf70", "#7ad151", "#bddf26", "#fde725",
)  # fmt: skip
FONT = 'font-family="system-ui, sans-serif" font-size="12"'


def _num(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _short(text: str, limit: int = 22) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


CHAR_PX = 7.0  # about the width of a character at 12 px: margins are sized from the longest label


def row_label(entry: dict[str, Any]) -> str:
    """A row's label: the team name, marked when it is a baseline (unless its name says so already)."""
    name = _short(entry["team_name"], 28)
    baseline = entry["is_baseline"] and "baseline" not in entry["team_name"].lower()
    return name + (" (baseline)" if baseline else "")


def entry_name(entry: dict[str, Any]) -> str:
    return f"{entry['team_name']} – {entry['method_name']}" if entry["method_name"] else entry["team_name"]


def _svg(plot_id: str, width: float, height: float, title: str, desc: str, body: list[str]) -> Markup:
    head = (
        f'<svg id="{plot_id}" class="plot" viewBox="0 0 {width:.0f} {height:.0f}" width="{width:.0f}" '
        f'height="{height:.0f}" role="img" aria-labelledby="{plot_id}-title {plot_id}-desc" '
        f'xmlns="http://www.w3.org/2000/svg" {FONT}>'
        f'<title id="{plot_id}-title">{escape(title)}</title><desc id="{plot_id}-desc">{escape(desc)}</desc>'
    )
    return Markup(head + "".join(body) + "</svg>")


def viridis(value: float) -> str:
    return VIRIDIS[max(0, min(10, round(value * 10)))]


def _text_on(value: float) -> str:
    """Black on the light end of viridis, white on the dark end."""
    return "#000000" if value >= 0.5 else "#ffffff"


def blob_plot(doc: dict[str, Any]) -> Markup | None:
    """Rank frequencies over the bootstrap resamples: a disc per entry and rank, its area the share of
    resamples; the median rank a black cross, the 95% rank interval a black bar."""
    ranking = doc.get("ranking") or {}
    if not ranking.get("available"):
        return None
    entries = [doc["entries"][i] for i in doc["ranked"]]
    n = len(entries)
    longest = max(len(_short(e["team_name"])) for e in entries)
    step, left, top, bottom = 44.0, 56.0, 24.0, 24.0 + 5.0 * longest
    width, height = left + step * n + 24 + 3.6 * longest, top + step * n + bottom
    body: list[str] = []
    for r in range(1, n + 1):
        y = top + step * (r - 0.5)
        body.append(f'<line x1="{left}" x2="{left + step * n}" y1="{y:.1f}" y2="{y:.1f}" stroke="#dddddd"/>')
        body.append(f'<text x="{left - 8}" y="{y + 4:.1f}" text-anchor="end">{r}</text>')
    body.append(
        f'<text x="14" y="{top + step * n / 2:.1f}" transform="rotate(-90 14 {top + step * n / 2:.1f})" '
        'text-anchor="middle">rank</text>'
    )
    for e, entry in enumerate(entries):
        x = left + step * (e + 0.5)
        colour = PALETTE[e % len(PALETTE)]
        frequencies = ranking["frequencies"][e]
        total = sum(frequencies) or 1
        name = escape(entry_name(entry))
        for r, count in enumerate(frequencies, start=1):
            if count:
                share = count / total
                radius = max(1.5, (step / 2 - 2) * share**0.5)
                body.append(
                    f'<circle cx="{x:.1f}" cy="{top + step * (r - 0.5):.1f}" r="{radius:.1f}" fill="{colour}" '
                    f'fill-opacity="0.75"><title>{name}: rank {r} in {share:.1%} of resamples</title></circle>'
                )
        low, high = ranking["rank_ci95"][e]
        median = ranking["median_rank"][e]
        y_low, y_high, y_med = (top + step * (v - 0.5) for v in (low, high, median))
        body.append(
            f'<g class="interval"><title>{name}: rank {ranking["ranks"][e]}, median {median:g}, 95% interval '
            f"{low:g} to {high:g}</title>"
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{y_low:.1f}" y2="{y_high:.1f}" stroke="#000000" stroke-width="2"/>'
            f'<path d="M{x - 5:.1f},{y_med - 5:.1f}l10,10m0,-10l-10,10" stroke="#000000" stroke-width="2"/></g>'
        )
        label_y = top + step * n + 10
        body.append(
            f'<text x="{x:.1f}" y="{label_y:.1f}" transform="rotate(45 {x:.1f} {label_y:.1f})">'
            f"{escape(_short(entry['team_name']))}</text>"
        )
    desc = (
        f"Bootstrap rank distribution of the {n} ranked entries over {doc['resamples']} resamples of the cases "
        "(resampled within each scanner). Discs: share of resamples at each rank; cross: median rank; bar: 95% "
        f"interval. Median Kendall's tau between the full and the resampled rankings: {_num(ranking['tau_median'])}."
    )
    return _svg("blob-plot", width, height, "Rank uncertainty (blob plot)", desc, body)


def significance_map(doc: dict[str, Any]) -> Markup | None:
    """Cell (row i, column j) filled and marked when entry i is significantly better than entry j."""
    sig = doc.get("significance")
    if not sig:
        return None
    entries = [doc["entries"][i] for i in doc["ranked"]]
    n = len(entries)
    longest = max(len(_short(e["team_name"])) for e in entries)
    cell, left, top = 28.0, 24.0 + CHAR_PX * longest, 24.0 + 6.0 * longest
    width, height = left + cell * n + 16 + 3.6 * longest, top + cell * n + 16
    body: list[str] = []
    for i, a in enumerate(entries):
        y = top + cell * i
        body.append(
            f'<text x="{left - 6}" y="{y + cell / 2 + 4:.1f}" text-anchor="end">{escape(_short(a["team_name"]))}</text>'
        )
        x = left + cell * (i + 0.5)
        body.append(
            f'<text x="{x:.1f}" y="{top - 6}" transform="rotate(-60 {x:.1f} {top - 6})">'
            f"{escape(_short(a['team_name']))}</text>"
        )
        for j, b in enumerate(entries):
            if i == j:
                continue
            better = bool(sig["better"][i][j])
            fill = "#0072B2" if better else "#eeeeee"
            adjusted = sig["adjusted"][i][j]
            verdict = "significantly better than" if better else "not significantly better than"
            body.append(
                f"<g><title>{escape(a['team_name'])} {verdict} {escape(b['team_name'])} (Holm-adjusted p "
                f"{_num(adjusted)})</title>"
                f'<rect x="{left + cell * j:.1f}" y="{y:.1f}" width="{cell - 2}" height="{cell - 2}" fill="{fill}"/>'
                + (
                    f'<text x="{left + cell * (j + 0.5) - 1:.1f}" y="{y + cell / 2 + 4:.1f}" text-anchor="middle" '
                    f'fill="#ffffff">+</text>'
                    if better
                    else ""
                )
                + "</g>"
            )
    desc = (
        f"Pairwise significance of the {n} ranked entries: a filled cell marked + means the row's entry has a "
        f"significantly higher F1 than the column's (paired bootstrap over {sig['resamples']} resamples, one-sided, "
        f"Holm-corrected over {sig['pairs_tested']} ordered pairs at {sig['alpha']:g}). The smallest adjusted p "
        f"these resamples allow is {_num(sig['min_adjusted_p'])}."
    )
    return _svg("significance-map", width, height, "Pairwise significance", desc, body)


def rank_comparison(doc: dict[str, Any]) -> Markup | None:
    """Two columns of ranks: aggregate-then-rank (pooled F1) left, rank-then-aggregate (mean rank over the
    groups) right, one line per entry."""
    comparison = doc.get("rank_then_aggregate")
    if not comparison:
        return None
    entries = [doc["entries"][i] for i in doc["ranked"]]
    n = len(entries)
    longest = max(len(_short(e["team_name"], 26)) for e in entries) + 4
    step, top = 26.0, 40.0
    x_left = 16.0 + CHAR_PX * longest
    x_right = x_left + 220.0
    width, height = x_right + 16.0 + CHAR_PX * longest, top + step * n + 16

    def rows_of(ranks: list[int]) -> list[int]:
        """Row of each entry in one column: by rank, tied entries one below the other (board order)."""
        order = sorted(range(n), key=lambda e: (ranks[e], e))
        return [order.index(e) for e in range(n)]

    left_rows = rows_of(comparison["aggregate_ranks"])
    right_rows = rows_of(comparison["rank_then_aggregate_ranks"])
    body = [
        f'<text x="{x_left}" y="20" text-anchor="middle">pooled F1, then rank</text>',
        f'<text x="{x_right}" y="20" text-anchor="middle">rank per scanner, then mean</text>',
    ]
    for e, entry in enumerate(entries):
        a, b = comparison["aggregate_ranks"][e], comparison["rank_then_aggregate_ranks"][e]
        ya, yb = top + step * (left_rows[e] + 0.5), top + step * (right_rows[e] + 0.5)
        colour = PALETTE[e % len(PALETTE)]
        name = escape(_short(entry["team_name"], 26))
        body.append(
            f"<g><title>{escape(entry_name(entry))}: rank {a} by pooled F1 {_num(comparison['pooled_f1'][e])}, "
            f"rank {b} by mean scanner rank {comparison['mean_group_rank'][e]:.2f}</title>"
            f'<line x1="{x_left}" x2="{x_right}" y1="{ya:.1f}" y2="{yb:.1f}" stroke="{colour}" stroke-width="2.5"/>'
            f'<circle cx="{x_left}" cy="{ya:.1f}" r="5" fill="{colour}"/>'
            f'<circle cx="{x_right}" cy="{yb:.1f}" r="5" fill="{colour}"/>'
            f'<text x="{x_left - 10}" y="{ya + 4:.1f}" text-anchor="end">{a}. {name}</text>'
            f'<text x="{x_right + 10}" y="{yb + 4:.1f}">{b}. {name}</text></g>'
        )
    desc = (
        "The ranking by F1 pooled over all cases (left) beside the ranking by each entry's mean rank over the "
        f"scanners (right); crossing lines are entries whose place depends on the aggregation. Kendall's tau "
        f"between the two: {_num(comparison['tau'])}."
    )
    return _svg("rank-comparison", width, height, "Aggregate then rank versus rank then aggregate", desc, body)


def heatmap(doc: dict[str, Any]) -> Markup | None:
    """F1 of every entry (rows, baselines included) on every shown group (columns), value and 95% interval
    printed in the cell, the fill from viridis."""
    heat = doc.get("heatmap")
    groups = doc.get("groups") or []
    if not heat or not groups:
        return None
    entries = doc["entries"]
    cell_w, cell_h, top = 110.0, 40.0, 30.0
    left = 16.0 + CHAR_PX * max(len(row_label(e)) for e in entries)
    width, height = left + cell_w * len(groups) + 16, top + cell_h * len(entries) + 16
    body: list[str] = []
    seen = set(doc.get("seen_groups") or [])
    for g, group in enumerate(groups):
        label = f"{group} (seen)" if group in seen else group
        body.append(
            f'<text x="{left + cell_w * (g + 0.5):.1f}" y="{top - 10}" text-anchor="middle">{escape(label)}</text>'
        )
    for e, entry in enumerate(entries):
        y = top + cell_h * e
        body.append(
            f'<text x="{left - 8}" y="{y + cell_h / 2 + 4:.1f}" text-anchor="end">{escape(row_label(entry))}</text>'
        )
        for g, group in enumerate(groups):
            value = heat["f1"][e][g]
            low, high = heat["ci95"][e][g]
            x = left + cell_w * g
            ink = _text_on(value)
            body.append(
                f"<g><title>{escape(entry_name(entry))}, {escape(group)}: F1 {_num(value)} (95% CI {_num(low)} to "
                f"{_num(high)})</title>"
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{cell_w - 2}" height="{cell_h - 2}" fill="{viridis(value)}"/>'
                f'<text x="{x + cell_w / 2:.1f}" y="{y + 16:.1f}" text-anchor="middle" fill="{ink}" '
                f'font-weight="bold">{_num(value)}</text>'
                f'<text x="{x + cell_w / 2:.1f}" y="{y + 31:.1f}" text-anchor="middle" fill="{ink}" '
                f'font-size="10">[{_num(low, 2)}, {_num(high, 2)}]</text></g>'
            )
    desc = (
        "F1 of each entry on each scanner with its 95% bootstrap interval (cases resampled within the scanner). "
        "Lighter cells are higher F1 (viridis scale, 0 dark purple to 1 yellow); the values are printed in the cells."
    )
    return _svg("heatmap", width, height, "F1 per entry and scanner", desc, body)


def gap_plot(doc: dict[str, Any]) -> Markup | None:
    """Seen versus unseen F1 per entry: two points with their 95% intervals on a 0-1 axis, joined by a line."""
    rows = doc.get("generalisation")
    if not rows:
        return None
    entries = doc["entries"]
    step, top, plot_w = 30.0, 40.0, 360.0
    left = 16.0 + CHAR_PX * max(len(row_label(e)) for e in entries)
    width, height = left + plot_w + 140, top + step * len(entries) + 40

    def x_of(v: float) -> float:
        return left + plot_w * max(0.0, min(1.0, v))

    body = []
    for t in range(6):
        x = x_of(t / 5)
        body.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top - 8}" y2="{height - 30}" stroke="#dddddd"/>')
        body.append(f'<text x="{x:.1f}" y="{height - 14}" text-anchor="middle">{t / 5:.1f}</text>')
    body.append(
        f'<text x="{left}" y="18">F1: <tspan fill="#0072B2">● seen scanners</tspan>  '
        f'<tspan fill="#D55E00">■ unseen scanners</tspan></text>'
    )
    for e, (entry, row) in enumerate(zip(entries, rows, strict=True)):
        y = top + step * e + step / 2
        body.append(f'<text x="{left - 8}" y="{y + 4:.1f}" text-anchor="end">{escape(row_label(entry))}</text>')
        seen, unseen = row["seen_f1"], row["unseen_f1"]
        if seen is None or unseen is None:
            continue
        parts = [
            f"<g><title>{escape(entry_name(entry))}: seen F1 {_num(seen)}, unseen F1 {_num(unseen)}, gap "
            f"{_num(row['gap'])} (95% CI {_num(row['gap_ci95'][0])} to {_num(row['gap_ci95'][1])})</title>",
            f'<line x1="{x_of(seen):.1f}" x2="{x_of(unseen):.1f}" y1="{y:.1f}" y2="{y:.1f}" stroke="#999999"/>',
        ]
        for ci, colour, dy in ((row["seen_ci95"], "#0072B2", -4), (row["unseen_ci95"], "#D55E00", 4)):
            parts.append(
                f'<line x1="{x_of(ci[0]):.1f}" x2="{x_of(ci[1]):.1f}" y1="{y + dy:.1f}" y2="{y + dy:.1f}" '
                f'stroke="{colour}" stroke-width="2"/>'
            )
        parts.append(f'<circle cx="{x_of(seen):.1f}" cy="{y - 4:.1f}" r="5" fill="#0072B2"/>')
        parts.append(f'<rect x="{x_of(unseen) - 5:.1f}" y="{y - 1:.1f}" width="10" height="10" fill="#D55E00"/>')
        parts.append(f'<text x="{left + plot_w + 12}" y="{y + 4:.1f}">gap {_num(row["gap"])}</text></g>')
        body.append("".join(parts))
    desc = (
        "Pooled F1 of each entry on the scanners its training data covered (circles) and on the unseen scanners "
        "(squares), each with its 95% bootstrap interval; the gap is seen minus unseen."
    )
    return _svg("gap-plot", width, height, "Seen versus unseen scanners", desc, body)


def significant_pairs(doc: dict[str, Any]) -> int:
    """Ordered pairs of the significance map in which the row's entry is significantly better."""
    sig = doc.get("significance") or {}
    return sum(bool(cell) for row in sig.get("better", []) for cell in row)


def analysis_plots(doc: dict[str, Any]) -> dict[str, Markup | None]:
    """Every plot of the analysis page, keyed by the name of its CSV table."""
    return {
        "ranks": blob_plot(doc),
        "significance": significance_map(doc),
        "rank-aggregation": rank_comparison(doc),
        "heatmap": heatmap(doc),
        "generalisation": gap_plot(doc),
    }


def analysis_context(doc: dict[str, Any], *, csv_base: str | None) -> dict[str, Any]:
    """What the analysis templates need: the document, its plots, the significant-pair count and the CSV link of
    each table (None offline, where `csv_base` is None)."""

    def csv(table: str) -> str | None:
        return None if csv_base is None else f"{csv_base}/analysis/{table}.csv"

    plots = analysis_plots(doc) if doc.get("available") else {}
    return {"doc": doc, "plots": plots, "significant_pairs": significant_pairs(doc), "csv": csv}
