"""The domain report of a detection test set: how its scanners differ in colour, stain, sharpness and resolution.

`build_report(test_set, out_dir)` samples tiles on a grid of every image, measures per scanner the Macenko stain
vectors, optical-density statistics, haematoxylin and eosin concentration histograms (colour deconvolution with
the fixed Ruifrok-Johnston vectors, so every scanner's histogram lies on the same axes), the sharpness (variance
of the Laplacian, per tile) and the pixel spacing; embeds the standardised tile features in 2-D (t-SNE) and
trains a scanner classifier on them: its cross-validated balanced accuracy, beside chance (1 / scanners), is the
domain-gap number. Writes report.json, features.csv, per_scanner.csv, embedding.svg and a self-contained
index.html (docs/test-sets.md, "Domain report").

Imports numpy and scipy; scikit-learn inside the functions that need it (a clear error when it is missing).
"""

from __future__ import annotations

import csv
import html
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from worker.datasets.errors import DatasetError
from worker.datasets.manifest import DETECTION, TestSet
from worker.datasets.tissue_measures import (
    FEATURES,
    OD_THRESHOLD,
    RUIFROK_E,
    RUIFROK_H,
    macenko_stain_vectors,
    optical_density,
    stain_concentrations,
    tile_features,
)

F64 = npt.NDArray[np.float64]
U8 = npt.NDArray[np.uint8]

SKLEARN_MISSING = "the domain report needs scikit-learn: pip install scikit-learn (or the datasets extra)"

CONC_BINS = 24
OD_PERCENTILES = (5, 25, 50, 75, 95)
# Okabe & Ito's colour-blind-safe palette (black last: it is also the axes' colour)
OKABE_ITO = ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000")


Progress = Callable[[str], None]
# (name, function from tiles to an N x channels array): the learnt features measured beside the descriptors
LearntFeatures = tuple[str, Callable[[Sequence[U8]], F64]]


def _sklearn() -> Any:
    try:
        import sklearn
    except ImportError:
        raise DatasetError(SKLEARN_MISSING) from None
    return sklearn


# ------------------------------------------------------------------------------------------------ tiles


@dataclass(frozen=True)
class Tile:
    image: str  # case name
    scanner: str
    x: int  # top-left corner, pixels
    y: int


def tile_grid(width: int, height: int, tile: int) -> list[tuple[int, int]]:
    """Top-left corners of the non-overlapping tiles of a grid centred in the image."""
    nx, ny = width // tile, height // tile
    ox, oy = (width - nx * tile) // 2, (height - ny * tile) // 2
    return [(ox + i * tile, oy + j * tile) for j in range(ny) for i in range(nx)]


def _sample_tiles(
    rgb: U8, tile: int, per_image: int, rng: np.random.Generator, min_tissue: float
) -> list[tuple[int, int]]:
    """At most `per_image` grid tiles, drawn at random among those with at least `min_tissue` tissue (all tiles
    when none has)."""
    corners = tile_grid(rgb.shape[1], rgb.shape[0], tile)
    tissue = np.all(optical_density(rgb) >= OD_THRESHOLD, axis=2)
    keep = [(x, y) for x, y in corners if tissue[y : y + tile, x : x + tile].mean() >= min_tissue] or corners
    if len(keep) > per_image:
        idx = np.sort(rng.choice(len(keep), per_image, replace=False))
        keep = [keep[i] for i in idx]
    return keep


# ------------------------------------------------------------------------------------------------ report


@dataclass
class ScannerStats:
    scanner: str
    images: int
    tiles: int
    spacing_mm: list[float]
    stain_h: list[float] | None
    stain_e: list[float] | None
    od_mean: list[float]
    od_percentiles: dict[str, list[float]]
    h_hist: list[float]
    e_hist: list[float]
    h_mean: float
    e_mean: float
    sharpness: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def build_report(
    test_set: TestSet,
    out_dir: Path,
    *,
    tile_size: int = 128,
    tiles_per_image: int = 32,
    min_tissue: float = 0.25,
    seed: int = 0,
    learnt: LearntFeatures | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Measure `test_set` and write report.json, features.csv, per_scanner.csv, embedding.svg and index.html
    into `out_dir` (created). Returns report.json's object. `progress` receives one line per step. With
    `learnt` (a name and a function from tiles to feature vectors, e.g. the reference CNN's penultimate layer by
    worker.inference.tile_features), the domain gap and the embedding are also computed on those features
    (`domain_gap_cnn`, embedding-cnn.svg)."""
    from worker.datasets.tiff import decode_rgb

    _sklearn()
    say = progress or (lambda _line: None)
    if test_set.task != DETECTION:
        raise DatasetError(f"{test_set.root}: the domain report is for detection sets (this one is {test_set.task})")
    cases = [c for c in test_set.cases if c.image is not None]
    if not cases:
        raise DatasetError(f"{test_set.root}: no images")
    scanners = list(dict.fromkeys(c.scanner for c in cases))
    out_dir.mkdir(parents=True, exist_ok=True)

    tiles: list[Tile] = []
    rows: list[F64] = []
    pixels: dict[str, list[U8]] = {s: [] for s in scanners}
    kept: list[U8] = []  # the tiles themselves, for the CNN features
    for i, case in enumerate(cases):
        say(f"tiles: {case.name} ({i + 1}/{len(cases)})")
        rgb = decode_rgb(test_set.image_path(case))
        if rgb.shape[0] < tile_size or rgb.shape[1] < tile_size:
            raise DatasetError(f"{case.name}: smaller than one {tile_size}-px tile")
        rng = np.random.default_rng([seed, i])
        for x, y in _sample_tiles(rgb, tile_size, tiles_per_image, rng, min_tissue):
            t = rgb[y : y + tile_size, x : x + tile_size]
            tiles.append(Tile(case.name, case.scanner, x, y))
            rows.append(tile_features(t))
            pixels[case.scanner].append(t.reshape(-1, 3))
            if learnt is not None:
                kept.append(t)
    features = np.stack(rows)
    labels = np.array([t.scanner for t in tiles])
    images = np.array([t.image for t in tiles])

    say("per scanner: stain vectors, optical density, H and E, sharpness")
    per_scanner, (h_top, e_top) = _per_scanner(cases, scanners, pixels, features, labels, seed)
    say(f"embedding: t-SNE of {len(tiles)} tiles")
    embedding = embed(features, seed=seed)
    say("domain gap: scanner classifier, cross-validated")
    gap = domain_gap(features, labels, images, seed=seed)
    cnn_svg = None
    gap_cnn: dict[str, Any] | None = None
    if learnt is not None:
        name, features_of = learnt
        say(f"CNN features: {name}, penultimate layer of {len(kept)} tiles")
        vectors = features_of(kept)
        gap_cnn = {
            **domain_gap(vectors, labels, images, seed=seed),
            "features": f"{vectors.shape[1]} channels of the feature layers of {name}, mean over the tile",
        }
        cnn_svg = embedding_svg(
            embed(vectors, seed=seed),
            labels,
            scanners,
            [t.image for t in tiles],
            plot_id="emb-cnn",
            what="CNN features",
        )

    report: dict[str, Any] = {
        "test_set": test_set.manifest.name or test_set.root.name,
        "images": len(cases),
        "tiles": len(tiles),
        "tile_size": tile_size,
        "tiles_per_image": tiles_per_image,
        "seed": seed,
        "stain_deconvolution": "fixed Ruifrok-Johnston H&E vectors (the same axes for every scanner)",
        "ruifrok_vectors": {"h": list(RUIFROK_H), "e": list(RUIFROK_E)},
        "optical_density": "-ln((I + 1) / 256) per channel",
        "concentration_histograms": {
            "bins": CONC_BINS,
            "h_range": [0.0, round(h_top, 4)],
            "e_range": [0.0, round(e_top, 4)],
            "note": "fraction of the scanner's tile pixels per bin; the last bin holds everything above the range",
        },
        "features": list(FEATURES),
        "scanners": [s.to_json() for s in per_scanner],
        "domain_gap": gap,
        "domain_gap_cnn": gap_cnn,
    }
    say(f"writing {out_dir}")
    (out_dir / "report.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    _write_features_csv(out_dir / "features.csv", tiles, features, embedding)
    _write_per_scanner_csv(out_dir / "per_scanner.csv", per_scanner)
    svg = embedding_svg(embedding, labels, scanners, [t.image for t in tiles])
    (out_dir / "embedding.svg").write_text(svg, encoding="utf-8")
    if cnn_svg is not None:
        (out_dir / "embedding-cnn.svg").write_text(cnn_svg, encoding="utf-8")
    (out_dir / "index.html").write_text(_index_html(report, per_scanner, svg, cnn_svg), encoding="utf-8")
    return report


def _per_scanner(
    cases: Sequence[Any], scanners: list[str], pixels: dict[str, list[U8]], features: F64, labels: Any, seed: int
) -> tuple[list[ScannerStats], tuple[float, float]]:
    """The ScannerStats of every scanner, and the top of the H and E histograms' range (they start at 0)."""
    all_conc = stain_concentrations(optical_density(np.concatenate([np.concatenate(p) for p in pixels.values()])))
    # common bins for every scanner: from 0 to the 99.5th percentile of all pixels' concentrations
    h_top = max(float(np.percentile(all_conc[:, 0], 99.5)), 1e-3)
    e_top = max(float(np.percentile(all_conc[:, 1], 99.5)), 1e-3)
    lap = features[:, FEATURES.index("laplacian_var")]
    out = []
    for k, scanner in enumerate(scanners):
        px = np.concatenate(pixels[scanner])
        od = optical_density(px)
        conc = stain_concentrations(od)
        stain_h: list[float] | None
        stain_e: list[float] | None
        try:
            h, e = macenko_stain_vectors(px, seed=seed + k)
            stain_h, stain_e = [round(float(v), 4) for v in h], [round(float(v), 4) for v in e]
        except ValueError:
            stain_h = stain_e = None
        h_hist, _ = np.histogram(np.clip(conc[:, 0], 0, h_top), bins=CONC_BINS, range=(0.0, h_top))
        e_hist, _ = np.histogram(np.clip(conc[:, 1], 0, e_top), bins=CONC_BINS, range=(0.0, e_top))
        sharp = lap[labels == scanner]
        spacings = sorted({c.spacing_mm for c in cases if c.scanner == scanner and c.spacing_mm is not None})
        out.append(
            ScannerStats(
                scanner=scanner,
                images=sum(1 for c in cases if c.scanner == scanner),
                tiles=len(sharp),
                spacing_mm=[float(s) for s in spacings],
                stain_h=stain_h,
                stain_e=stain_e,
                od_mean=[round(float(v), 4) for v in od.mean(axis=0)],
                od_percentiles={
                    f"p{p}": [round(float(v), 4) for v in np.percentile(od, p, axis=0)] for p in OD_PERCENTILES
                },
                h_hist=[round(float(v), 5) for v in h_hist / len(px)],
                e_hist=[round(float(v), 5) for v in e_hist / len(px)],
                h_mean=round(float(conc[:, 0].mean()), 4),
                e_mean=round(float(conc[:, 1].mean()), 4),
                sharpness={
                    "mean": round(float(sharp.mean()), 3),
                    "median": round(float(np.median(sharp)), 3),
                    "p10": round(float(np.percentile(sharp, 10)), 3),
                    "p90": round(float(np.percentile(sharp, 90)), 3),
                },
            )
        )
    return out, (h_top, e_top)


def embed(features: F64, *, seed: int = 0) -> F64:
    """2-D t-SNE of the standardised features (scikit-learn, fixed random_state); N x 2."""
    _sklearn()
    from sklearn.manifold import TSNE
    from sklearn.preprocessing import StandardScaler

    n = len(features)
    if n < 4:
        return np.zeros((n, 2))
    x = StandardScaler().fit_transform(features)
    tsne = TSNE(n_components=2, perplexity=min(30.0, (n - 1) / 3.0), init="pca", random_state=seed)
    return np.asarray(tsne.fit_transform(x), dtype=np.float64)


def domain_gap(features: F64, labels: Any, groups: Any, *, seed: int = 0, folds: int = 5) -> dict[str, Any]:
    """Cross-validated balanced accuracy of a scanner classifier (standardised features, logistic regression),
    from the out-of-fold predictions of every tile. Tiles of one image stay in one fold (StratifiedGroupKFold)
    when every scanner has at least two images; otherwise tiles are split by StratifiedKFold."""
    _sklearn()
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score, confusion_matrix
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    labels = np.asarray(labels)
    groups = np.asarray(groups)
    classes = list(dict.fromkeys(labels.tolist()))
    chance = 1.0 / len(classes)
    result: dict[str, Any] = {"scanners": len(classes), "chance": round(chance, 4)}
    if len(classes) < 2:
        return {**result, "balanced_accuracy": None, "note": "one scanner: nothing to tell apart"}
    images_per = min(len(set(groups[labels == c].tolist())) for c in classes)
    tiles_per = min(int((labels == c).sum()) for c in classes)
    cv: Any
    if images_per >= 2:
        k = min(folds, images_per)
        cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        split = "StratifiedGroupKFold (grouped by image)"
    elif tiles_per >= 2:
        k = min(folds, tiles_per)
        cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        split = "StratifiedKFold (tiles; a scanner has a single image, so tiles of one image are split)"
    else:
        return {**result, "balanced_accuracy": None, "note": "a scanner has a single tile"}
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    pred = cross_val_predict(model, features, labels, groups=groups if images_per >= 2 else None, cv=cv)
    bacc = float(balanced_accuracy_score(labels, pred))
    return {
        **result,
        "balanced_accuracy": round(bacc, 4),
        "ratio_to_chance": round(bacc / chance, 3),
        "folds": k,
        "split": split,
        "classifier": "StandardScaler + LogisticRegression",
        "confusion": {"labels": classes, "matrix": confusion_matrix(labels, pred, labels=classes).tolist()},
    }


# ------------------------------------------------------------------------------------------------ writing


def _write_features_csv(path: Path, tiles: list[Tile], features: F64, embedding: F64) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "scanner", "x", "y", *FEATURES, "embed_x", "embed_y"])
        for t, f, e in zip(tiles, features, embedding, strict=True):
            w.writerow([t.image, t.scanner, t.x, t.y, *(f"{v:.6g}" for v in f), f"{e[0]:.5g}", f"{e[1]:.5g}"])


def _write_per_scanner_csv(path: Path, stats: list[ScannerStats]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(
            [
                "scanner",
                "images",
                "tiles",
                "spacing_um",
                "stain_h",
                "stain_e",
                "od_mean_r",
                "od_mean_g",
                "od_mean_b",
                "od_median_r",
                "od_median_g",
                "od_median_b",
                "h_mean",
                "e_mean",
                "laplacian_var_median",
            ]
        )
        for s in stats:
            w.writerow(
                [
                    s.scanner,
                    s.images,
                    s.tiles,
                    " ".join(f"{v * 1000:.4f}" for v in s.spacing_mm),
                    _vec(s.stain_h),
                    _vec(s.stain_e),
                    *s.od_mean,
                    *s.od_percentiles["p50"],
                    s.h_mean,
                    s.e_mean,
                    s.sharpness["median"],
                ]
            )


def _vec(v: list[float] | None) -> str:
    return "-" if v is None else " ".join(f"{x:.3f}" for x in v)


def _colour(k: int) -> str:
    return OKABE_ITO[k % len(OKABE_ITO)]


def _marker(k: int, x: float, y: float, colour: str) -> str:
    """A circle for the first 8 scanners, then squares, then triangles (colours repeat every 8)."""
    shape = (k // len(OKABE_ITO)) % 3
    if shape == 0:
        return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{colour}" fill-opacity="0.8"'
    if shape == 1:
        return f'<rect x="{x - 3:.1f}" y="{y - 3:.1f}" width="6" height="6" fill="{colour}" fill-opacity="0.8"'
    pts = f"{x:.1f},{y - 4:.1f} {x - 4:.1f},{y + 3:.1f} {x + 4:.1f},{y + 3:.1f}"
    return f'<polygon points="{pts}" fill="{colour}" fill-opacity="0.8"'


def embedding_svg(
    embedding: F64,
    labels: Any,
    scanners: list[str],
    images: list[str],
    *,
    plot_id: str = "emb",
    what: str = "tile features",
) -> str:
    """A scatter plot of the embedding, one colour (Okabe-Ito) per scanner, a legend, <title> per point."""
    width, height, pad, legend_w = 640, 480, 20, 170
    plot_w = width - legend_w - 2 * pad
    plot_h = height - 2 * pad
    labels = np.asarray(labels)
    if len(embedding):
        lo, hi = embedding.min(axis=0), embedding.max(axis=0)
    else:
        lo, hi = np.zeros(2), np.ones(2)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    esc = html.escape
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-labelledby="{plot_id}-title {plot_id}-desc" '
        'font-family="sans-serif" font-size="12">',
        f'<title id="{plot_id}-title">t-SNE of {what}, coloured by scanner</title>',
        f'<desc id="{plot_id}-desc">{len(embedding)} tiles of {len(scanners)} scanners; tiles of a scanner that '
        "cluster apart from the others mean that scanner looks different.</desc>",
        f'<rect x="{pad}" y="{pad}" width="{plot_w}" height="{plot_h}" fill="white" stroke="#000000"/>',
    ]
    for k, scanner in enumerate(scanners):
        colour = _colour(k)
        idx = np.flatnonzero(labels == scanner)
        out.append(f"<g><title>{esc(scanner)}: {len(idx)} tiles</title>")
        for i in idx:
            x = pad + 6 + (embedding[i, 0] - lo[0]) / span[0] * (plot_w - 12)
            y = pad + 6 + (1.0 - (embedding[i, 1] - lo[1]) / span[1]) * (plot_h - 12)
            out.append(f"{_marker(k, x, y, colour)}><title>{esc(scanner)}: {esc(images[i])}</title></" + _tag(k) + ">")
        out.append("</g>")
    lx = width - legend_w + 4
    out.append('<g aria-label="legend">')
    for k, scanner in enumerate(scanners):
        y = pad + 14 + 20 * k
        out.append(f"{_marker(k, lx + 6, y - 4, _colour(k))}></{_tag(k)}>")
        out.append(f'<text x="{lx + 16}" y="{y}">{esc(scanner)}</text>')
    out.append("</g></svg>")
    return "\n".join(out) + "\n"


def _tag(k: int) -> str:
    return ("circle", "rect", "polygon")[(k // len(OKABE_ITO)) % 3]


_CSS = """
body { font-family: sans-serif; margin: 2em; color: #111; max-width: 60em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #999; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.gap { font-size: 1.4em; }
"""


def _gap_text(gap: dict[str, Any]) -> str:
    esc = html.escape
    if gap.get("balanced_accuracy") is None:
        return f"not measured ({esc(str(gap.get('note', '')))}); chance {gap['chance']:.3f}"
    return (
        f"balanced accuracy <strong>{gap['balanced_accuracy']:.3f}</strong> vs chance {gap['chance']:.3f} "
        f"({gap['scanners']} scanners; {gap['folds']}-fold {esc(gap['split'])})"
    )


def _index_html(report: dict[str, Any], stats: list[ScannerStats], svg: str, cnn_svg: str | None = None) -> str:
    esc = html.escape
    gap = report["domain_gap"]
    gap_text = _gap_text(gap)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Domain report: {esc(report['test_set'])}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Domain report: {esc(report['test_set'])}</h1>",
        f"<p>{report['images']} images, {report['tiles']} tiles of {report['tile_size']} px "
        f"(at most {report['tiles_per_image']} per image, seed {report['seed']}). "
        f"Stain concentrations: {esc(report['stain_deconvolution'])}.</p>",
        "<h2>Domain gap</h2>",
        f'<p class="gap">Scanner classifier: {gap_text}</p>',
        "<p>Near chance: the tile features do not tell the scanners apart. Near 1: every scanner is recognisable "
        "from colour and texture alone, so a detector may meet unseen scanners as a shift.</p>",
    ]
    if report.get("domain_gap_cnn"):
        cnn = report["domain_gap_cnn"]
        parts.append(
            f'<p class="gap" id="gap-cnn">On the reference CNN\'s features ({esc(cnn["features"])}): '
            f"{_gap_text(cnn)}</p>"
        )
    if gap.get("confusion"):
        conf = gap["confusion"]
        parts.append("<table><caption>Confusion (rows: true scanner, columns: predicted)</caption><tr><th></th>")
        parts += [f"<th>{esc(c)}</th>" for c in conf["labels"]]
        parts.append("</tr>")
        for c, row in zip(conf["labels"], conf["matrix"], strict=True):
            parts.append(f"<tr><th>{esc(c)}</th>" + "".join(f"<td>{v}</td>" for v in row) + "</tr>")
        parts.append("</table>")
    # inline SVG in HTML needs no namespace declaration (and the page then names no address at all)
    inline = svg.replace(' xmlns="http://www.w3.org/2000/svg"', "", 1)
    parts += ["<h2>Embedding</h2>", inline]
    if cnn_svg is not None:
        parts += ["<h3>Reference CNN features</h3>", cnn_svg.replace(' xmlns="http://www.w3.org/2000/svg"', "", 1)]
    parts.append("<h2>Scanners</h2>")
    for s in stats:
        parts.append(f"<h3>{esc(s.scanner)}</h3><table><caption>{esc(s.scanner)}</caption>")
        rows = [
            ("images / tiles", f"{s.images} / {s.tiles}"),
            ("pixel spacing (&micro;m/px)", " ".join(f"{v * 1000:.4f}" for v in s.spacing_mm) or "?"),
            ("Macenko H vector (R G B)", _vec(s.stain_h)),
            ("Macenko E vector (R G B)", _vec(s.stain_e)),
            ("mean OD (R G B)", " ".join(f"{v:.3f}" for v in s.od_mean)),
            *((f"OD {p} (R G B)", " ".join(f"{v:.3f}" for v in s.od_percentiles[p])) for p in ("p5", "p50", "p95")),
            ("mean H / E concentration", f"{s.h_mean:.3f} / {s.e_mean:.3f}"),
            (
                "Laplacian variance (median, p10-p90)",
                f"{s.sharpness['median']:.1f} ({s.sharpness['p10']:.1f}-{s.sharpness['p90']:.1f})",
            ),
        ]
        for name, value in rows:
            parts.append(f"<tr><th>{name}</th><td>{esc(value) if '&' not in value else value}</td></tr>")
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
