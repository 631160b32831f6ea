"""Import of atypical / normal mitotic-figure labels as a classification test set (layout: worker.datasets.stacks).

Two sources, both a CSV of figures (an image, a pixel centre, a label) plus the images it names:

- the MIDOG 2025 atypical CSV: image_id, filename, coordinateX, coordinateY, Tumor, Scanner, Origin, Species,
  expert1, expert2, expert3, majority (AMF = atypical, NMF = normal); the images are MIDOG++'s TIFFs;
- the AMi-Br CSV: (an unnamed index,) slide, dataset (MIDOG21 / TUPAC16), uid, x, y, expert labels,
  majority_atypical (True / False or 1 / 0); the images are MIDOG 2021's and TUPAC16's. It names no scanner
  and no tumour: MIDOG21 slides get the MIDOG 2021 scanner of their number (001-050 Hamamatsu XR, ...), other
  slides one from --scanner-map / --default-scanner; the tumour is "human breast cancer" for all (or a tumour
  column when the file has one).

Each figure becomes a patch of patch_size pixels centred on it (stacks.cut_patch: white beyond the image).
Figures are grouped by image (then tumour and scanner, so each stack has one tumour domain and one scanner),
in the order the images first appear, figures in file order; an image's figures are split into the fewest
stacks of at most max_patches (16), as even as possible. Tumours map to integer domains in sorted order
(recorded in the manifest's source as `tumor_domains`). Errors are one line naming the file, the line and
the field, e.g. ``atypical.csv: line 7: coordinateX: expected a number, got 'abc'``.

Imports numpy and tifffile (through worker.datasets.tiff / stacks) and the stdlib; never torch or the service.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worker.datasets.errors import DatasetError
from worker.datasets.manifest import CLASSIFICATION, IMAGES_DIR, Case, Manifest, TestSet, sha256_file
from worker.datasets.midog import (
    MIDOG2021_RANGES,
    ImportOptions,
    ScannerMap,
    _link,
    _plain_file_name,
    normalise_scanner,
    resolve_scanners,
)
from worker.datasets.stacks import (
    ATYPICAL,
    DEFAULT_PATCH_SIZE,
    MAX_PATCHES,
    NORMAL,
    StackTruth,
    cut_patch,
    domain_mapping,
    split_sizes,
    stack_groups,
    write_classification_test_set,
    write_stack_tiff,
)

Progress = Callable[[int, int], None]

MIDOG25 = "midog2025-atypical"
AMIBR = "amibr"
BREAST = "human breast cancer"  # AMi-Br: MIDOG 2021 and TUPAC16 are human breast cancer

# canonical field -> accepted column names, the real file's spelling first (compared lower-case, without spaces,
# '_' or '-'; errors name the first)
_MIDOG25_COLUMNS: dict[str, tuple[str, ...]] = {
    "image": ("filename", "file_name", "image", "slide"),
    "x": ("coordinateX", "x"),
    "y": ("coordinateY", "y"),
    "tumor": ("Tumor", "tumour", "tumor_type"),
    "scanner": ("Scanner",),
    "label": ("majority", "label", "majority_label"),
}
_MIDOG25_OPTIONAL: dict[str, tuple[str, ...]] = {"id": ("image_id", "id"), "species": ("Species",)}
_AMIBR_COLUMNS: dict[str, tuple[str, ...]] = {
    "image": ("slide", "filename", "file_name", "image"),
    "x": ("x", "coordinateX"),
    "y": ("y", "coordinateY"),
    "label": ("majority_atypical", "atypical"),
}
_AMIBR_OPTIONAL: dict[str, tuple[str, ...]] = {
    "id": ("uid", "id"),
    "dataset": ("dataset",),
    "tumor": ("tumor", "tumour", "tumor_type"),
    "scanner": ("scanner",),
}
_TRUE = {"true", "1", "yes", "y", "t", "1.0"}
_FALSE = {"false", "0", "no", "n", "f", "0.0"}
_MIDOG25_LABELS = {"amf": ATYPICAL, "nmf": NORMAL, "atypical": ATYPICAL, "normal": NORMAL}


@dataclass(frozen=True)
class Figure:
    """One labelled mitotic figure of a CSV: `image` is the file it lies in, (x, y) its centre in pixels."""

    image: str
    x: float
    y: float
    label: str  # stacks.NORMAL or stacks.ATYPICAL
    tumor: str
    scanner: str | None  # None: to be resolved from scanner maps
    dataset: str | None = None
    id: str | None = None
    line: int = 0


@dataclass(frozen=True)
class FigureTable:
    source: str  # the CSV's file name
    kind: str  # MIDOG25 or AMIBR
    figures: tuple[Figure, ...]


def _norm(name: str) -> str:
    return "".join(ch for ch in name.strip().lower() if ch not in " _-")


def _columns(
    header: Sequence[str],
    required: dict[str, tuple[str, ...]],
    optional: dict[str, tuple[str, ...]],
    source: str,
    expected: str,
) -> dict[str, int]:
    normed = [_norm(h) for h in header]
    found: dict[str, int] = {}
    missing: list[str] = []
    for key, names in (*required.items(), *optional.items()):
        index = next((normed.index(_norm(n)) for n in names if _norm(n) in normed), None)
        if index is not None:
            found[key] = index
        elif key in required:
            missing.append(names[0])
    if missing:
        found_names = ", ".join(h.strip() for h in header) or "none"
        raise DatasetError(
            f"{source}: missing column(s) {', '.join(missing)} (found: {found_names}); expected {expected}"
        )
    return found


def _read_rows(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path.name}: cannot read ({exc})") from None
    first = text.split("\n", 1)[0]
    delimiter = ";" if first.count(";") > first.count(",") else ("\t" if first.count("\t") > first.count(",") else ",")
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise DatasetError(f"{path.name}: empty file (expected a header line and one line per figure)") from None
    except csv.Error as exc:
        raise DatasetError(f"{path.name}: line 1: {exc}") from None
    rows: list[tuple[int, list[str]]] = []
    try:
        for row in reader:
            if row and any(c.strip() for c in row):
                rows.append((reader.line_num, row))
    except csv.Error as exc:
        raise DatasetError(f"{path.name}: line {reader.line_num}: {exc}") from None
    if not rows:
        raise DatasetError(f"{path.name}: no figures (only a header)")
    return header, rows


def _cell(row: list[str], cols: dict[str, int], key: str, header: Sequence[str], where: str) -> str:
    index = cols[key]
    if index >= len(row):
        raise DatasetError(f"{where}: {header[index].strip()}: missing (the line has {len(row)} fields)")
    return row[index].strip()


def _number(text: str, column: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise DatasetError(f"{where}: {column}: expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise DatasetError(f"{where}: {column}: expected a finite number, got {text!r}")
    return value


def _image_name(text: str, column: str, where: str) -> str:
    if not _plain_file_name(text):
        raise DatasetError(f"{where}: {column}: expected a plain image file name, got {text!r}")
    return text


def read_midog25_csv(path: Path) -> FigureTable:
    """The MIDOG 2025 atypical CSV (majority AMF / NMF; Tumor and Scanner per figure)."""
    header, rows = _read_rows(path)
    expected = (
        "the MIDOG 2025 atypical CSV (image_id, filename, coordinateX, coordinateY, Tumor, Scanner, ..., majority)"
    )
    cols = _columns(header, _MIDOG25_COLUMNS, _MIDOG25_OPTIONAL, path.name, expected)
    figures: list[Figure] = []
    for line, row in rows:
        where = f"{path.name}: line {line}"

        def cell(key: str, row: list[str] = row, where: str = where) -> str:
            return _cell(row, cols, key, header, where)

        label_text = cell("label")
        label = _MIDOG25_LABELS.get(label_text.lower())
        if label is None:
            raise DatasetError(
                f"{where}: {header[cols['label']].strip()}: expected AMF (atypical) or NMF (normal), got {label_text!r}"
            )
        tumor = cell("tumor")
        if not tumor:
            raise DatasetError(f"{where}: {header[cols['tumor']].strip()}: empty (every figure needs its tumour)")
        scanner = normalise_scanner(cell("scanner"))
        figures.append(
            Figure(
                image=_image_name(cell("image"), header[cols["image"]].strip(), where),
                x=_number(cell("x"), header[cols["x"]].strip(), where),
                y=_number(cell("y"), header[cols["y"]].strip(), where),
                label=label,
                tumor=tumor,
                scanner=scanner or None,
                id=cell("id") if "id" in cols else None,
                line=line,
            )
        )
    return FigureTable(source=path.name, kind=MIDOG25, figures=tuple(figures))


def read_amibr_csv(path: Path) -> FigureTable:
    """The AMi-Br CSV (majority_atypical True / False; no scanner, no tumour: see the module's docstring)."""
    header, rows = _read_rows(path)
    expected = "the AMi-Br CSV (slide, dataset, uid, x, y, ..., majority_atypical)"
    cols = _columns(header, _AMIBR_COLUMNS, _AMIBR_OPTIONAL, path.name, expected)
    figures: list[Figure] = []
    for line, row in rows:
        where = f"{path.name}: line {line}"

        def cell(key: str, row: list[str] = row, where: str = where) -> str:
            return _cell(row, cols, key, header, where)

        flag = cell("label").lower()
        if flag in _TRUE:
            label = ATYPICAL
        elif flag in _FALSE:
            label = NORMAL
        else:
            raise DatasetError(
                f"{where}: {header[cols['label']].strip()}: expected True or False (or 1 / 0), got {cell('label')!r}"
            )
        scanner = normalise_scanner(cell("scanner")) if "scanner" in cols else ""
        tumor = cell("tumor") if "tumor" in cols else ""
        figures.append(
            Figure(
                image=_image_name(cell("image"), header[cols["image"]].strip(), where),
                x=_number(cell("x"), header[cols["x"]].strip(), where),
                y=_number(cell("y"), header[cols["y"]].strip(), where),
                label=label,
                tumor=tumor or BREAST,
                scanner=scanner or None,
                dataset=(cell("dataset") or None) if "dataset" in cols else None,
                id=cell("id") if "id" in cols else None,
                line=line,
            )
        )
    return FigureTable(source=path.name, kind=AMIBR, figures=tuple(figures))


# ------------------------------------------------------------------------------------------ scanners

_MIDOG21 = ScannerMap(source="midog2021", ranges=MIDOG2021_RANGES)


def _is_midog21(dataset: str | None) -> bool:
    return dataset is not None and _norm(dataset) in {"midog21", "midog2021", "midog"}


def resolve_figure_scanners(
    table: FigureTable, maps: Sequence[ScannerMap], default: str | None
) -> dict[tuple[str, str | None], str]:
    """Scanner per (image, dataset): the CSV's own Scanner column first, then the maps (a later one overrides
    an earlier one; number-range presets such as midog2021 only for figures without a dataset or of MIDOG21,
    since TUPAC16's 42.tif is not MIDOG's 042.tiff), then MIDOG21's own scanners, then the default."""
    out: dict[tuple[str, str | None], str] = {}
    missing: list[str] = []
    for fig in table.figures:
        key = (fig.image, fig.dataset)
        if key in out:
            continue
        label = fig.scanner
        ranges_ok = fig.dataset is None or _is_midog21(fig.dataset)
        if label is None:
            for m in reversed(maps):
                if m.ranges and not m.entries and not ranges_ok:
                    continue
                label = m.lookup(fig.image)
                if label is not None:
                    break
        if label is None and _is_midog21(fig.dataset):
            label = _MIDOG21.lookup(fig.image)
        if label is None:
            label = default
        if label is None:
            missing.append(f"{fig.image}" + (f" ({fig.dataset})" if fig.dataset else "") + f" (line {fig.line})")
            out[key] = ""
            continue
        out[key] = label
    if missing:
        more = f" (and {len(missing) - 3} more)" if len(missing) > 3 else ""
        raise DatasetError(
            f"{table.source}: no scanner known for {', '.join(missing[:3])}{more}: give --scanner-map (a CSV "
            "image,scanner) or --default-scanner"
        )
    return out


# ------------------------------------------------------------------------------------------ import


@dataclass(frozen=True)
class FigureImportOptions:
    images_dir: Path
    patch_size: int = DEFAULT_PATCH_SIZE
    max_patches: int = MAX_PATCHES
    scanner_maps: tuple[ScannerMap, ...] = ()
    default_scanner: str | None = None
    spacing_mm: float | None = None  # overrides the TIFF resolution tags
    name: str | None = None
    workers: int = 1


@dataclass(frozen=True)
class _Stack:
    name: str
    image: str  # the source image's file name
    path: str  # where it was found
    scanner: str
    tumor: str
    figures: tuple[Figure, ...]


@dataclass
class _ImageJob:
    """All stacks cut from one source image (read once)."""

    path: str
    out_dir: str
    patch_size: int
    spacing_mm: float | None
    stacks: list[_Stack] = field(default_factory=list)


@dataclass(frozen=True)
class _ImageDone:
    spacing_mm: float | None
    size: tuple[int, int]
    sha256: dict[str, str]


def _find_image(images_dir: Path, fig: Figure, source: str) -> Path:
    candidates = [images_dir / fig.image]
    if fig.dataset:
        candidates.append(images_dir / fig.dataset / fig.image)
    for path in candidates:
        if path.is_file():
            return path
    shown = " or ".join(str(p) for p in candidates)
    raise DatasetError(f"{source}: line {fig.line}: {fig.image}: no such image ({shown}); check --images")


def _outside(fig: Figure, width: int, height: int) -> str | None:
    if 0 <= fig.x < width and 0 <= fig.y < height:
        return None
    return (
        f"line {fig.line}: ({fig.x:g}, {fig.y:g}) lies outside {fig.image} ({width}x{height} px); check the "
        "coordinates (pixels, x = column) and the image"
    )


def _check_inside(jobs: Iterable[_ImageJob], source: str) -> None:
    """Every figure inside its image, read from the TIFF headers only."""
    from worker.datasets.tiff import read_image_info

    for job in jobs:
        info = read_image_info(Path(job.path))
        for stack in job.stacks:
            for fig in stack.figures:
                problem = _outside(fig, info.width, info.height)
                if problem is not None:
                    raise DatasetError(f"{source}: {problem}")


def _cut_image(job: _ImageJob) -> _ImageDone:
    import numpy as np

    from worker.datasets.tiff import decode_rgb, read_image_info

    path = Path(job.path)
    info = read_image_info(path)
    spacing = job.spacing_mm if job.spacing_mm is not None else info.spacing_mm
    rgb = decode_rgb(path)
    height, width = rgb.shape[:2]
    shas: dict[str, str] = {}
    for stack in job.stacks:
        for fig in stack.figures:
            problem = _outside(fig, width, height)
            if problem is not None:  # the header said otherwise
                raise DatasetError(problem)
        patches = np.stack([cut_patch(rgb, fig.x, fig.y, job.patch_size) for fig in stack.figures])
        out = Path(job.out_dir) / IMAGES_DIR / stack.name
        write_stack_tiff(out, patches, spacing)
        shas[stack.name] = sha256_file(out)
    return _ImageDone(spacing_mm=spacing, size=(width, height), sha256=shas)


def import_figures(
    out_dir: Path, table: FigureTable, options: FigureImportOptions, *, progress: Progress | None = None
) -> TestSet:
    """Cut the figures of `table` from their images into stacks and write a classification test set."""
    if not 8 <= options.patch_size <= 4096:
        raise DatasetError("--patch-size: expected 8..4096 pixels")
    if not 1 <= options.max_patches <= MAX_PATCHES:
        raise DatasetError(f"--patches: expected 1..{MAX_PATCHES} patches per stack")
    if not options.images_dir.is_dir():
        raise DatasetError(f"{options.images_dir}: not a directory (--images)")
    scanners = resolve_figure_scanners(table, options.scanner_maps, options.default_scanner)
    domains = domain_mapping(f.tumor for f in table.figures)

    # group: image (first appearance), then tumour and scanner inside it; figures in file order
    groups: dict[tuple[str, str | None, str, str], list[Figure]] = {}
    for fig in table.figures:
        groups.setdefault((fig.image, fig.dataset, fig.tumor, scanners[(fig.image, fig.dataset)]), []).append(fig)
    jobs: dict[tuple[str, str | None], _ImageJob] = {}
    stacks: list[_Stack] = []
    for (image, dataset, tumor, scanner), figs in groups.items():
        path = _find_image(options.images_dir, figs[0], table.source)
        job = jobs.setdefault(
            (image, dataset),
            _ImageJob(
                path=str(path), out_dir=str(out_dir), patch_size=options.patch_size, spacing_mm=options.spacing_mm
            ),
        )
        start = 0
        for size in split_sizes(len(figs), options.max_patches):
            stack = _Stack(
                name=f"stack_{len(stacks) + 1}.tiff",
                image=image,
                path=str(path),
                scanner=scanner,
                tumor=tumor,
                figures=tuple(figs[start : start + size]),
            )
            start += size
            stacks.append(stack)
            job.stacks.append(stack)

    _check_inside(jobs.values(), table.source)  # before anything is written
    (out_dir / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    done: dict[str, _ImageDone] = {}
    ordered = list(jobs.values())
    total = len(ordered)
    if progress is not None:
        progress(0, total)
    try:
        if options.workers > 1 and total > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=min(options.workers, total), mp_context=ctx) as pool:
                for job, result in zip(ordered, pool.map(_cut_image, ordered), strict=True):
                    done[job.path] = result
                    if progress is not None:
                        progress(len(done), total)
        else:
            for job in ordered:
                done[job.path] = _cut_image(job)
                if progress is not None:
                    progress(len(done), total)
    except DatasetError as exc:
        message = str(exc)
        raise DatasetError(message if message.startswith(table.source) else f"{table.source}: {message}") from None

    cases: list[Case] = []
    truth: list[StackTruth] = []
    rows: list[dict[str, Any]] = []
    for stack in stacks:
        result = done[stack.path]
        page_domains = [domains[stack.tumor]] * len(stack.figures)
        cases.append(
            Case(
                name=stack.name,
                image=f"{IMAGES_DIR}/{stack.name}",
                scanner=stack.scanner,
                width=options.patch_size,
                height=options.patch_size,
                spacing_mm=result.spacing_mm,
                sha256=result.sha256[stack.name],
                groups=stack_groups(stack.scanner, page_domains),
                patches=len(stack.figures),
            )
        )
        truth.append(StackTruth(stack.name, tuple(f.label for f in stack.figures), tuple(page_domains)))
        for page, fig in enumerate(stack.figures):
            row: dict[str, Any] = {
                "stack": stack.name,
                "page": page,
                "image": fig.image,
                "x": f"{fig.x:g}",
                "y": f"{fig.y:g}",
                "label": fig.label,
                "tumor": fig.tumor,
                "tumor_domain": domains[fig.tumor],
                "scanner": stack.scanner,
            }
            if table.kind == AMIBR:
                row["dataset"] = fig.dataset
            row["id"] = fig.id
            row["line"] = fig.line
            rows.append(row)
    manifest = Manifest(
        name=options.name or out_dir.name,
        cases=tuple(cases),
        task=CLASSIFICATION,
        source={
            "kind": table.kind,
            "annotations": table.source,
            "patch_size": options.patch_size,
            "max_patches": options.max_patches,
            "tumor_domains": domains,
            "scanner_maps": [m.source for m in options.scanner_maps],
            "default_scanner": options.default_scanner,
            "spacing_mm": options.spacing_mm,
        },
    )
    return write_classification_test_set(out_dir, manifest, truth, patches_csv=rows)


def import_track2_ground_truth(out_dir: Path, gt_path: Path, options: ImportOptions) -> TestSet:
    """A classification test set from an official Track 2 ground truth ([{"image", "labels", "tumordomains"}])
    and its stack TIFFs in options.images_dir (linked or copied as options.link says); each stack's page count
    must equal its number of labels. Scanners come from the scanner maps or the default scanner."""
    from worker.datasets.stacks import read_classification_truth, stack_page_count
    from worker.datasets.tiff import read_image_info

    if options.images_dir is None:
        raise DatasetError("a classification ground truth needs its stacks: give --images")
    truth = read_classification_truth(gt_path)
    if not truth:
        raise DatasetError(f"{gt_path.name}: no stacks")
    names = [t.image for t in truth]
    for i, name in enumerate(names):
        if not _plain_file_name(name):
            raise DatasetError(f"{gt_path.name}[{i}].image: expected a plain file name, got {name!r}")
    scanners = resolve_scanners(names, options.scanner_maps, default=options.default_scanner)
    cases: list[Case] = []
    for i, entry in enumerate(truth):
        where = f"{gt_path.name}[{i}] ({entry.image})"
        src = options.images_dir / entry.image
        if not src.is_file():
            raise DatasetError(f"{where}: no such stack in {options.images_dir}")
        pages = stack_page_count(src)
        if pages != len(entry.labels):
            raise DatasetError(f"{where}: {len(entry.labels)} labels for {pages} pages (one label per page)")
        if pages > MAX_PATCHES:
            raise DatasetError(f"{where}: {pages} pages; a stack holds at most {MAX_PATCHES}")
        info = read_image_info(src)
        dst = out_dir / IMAGES_DIR / entry.image
        _link(src, dst, options.link)
        cases.append(
            Case(
                name=entry.image,
                image=f"{IMAGES_DIR}/{entry.image}",
                scanner=scanners[entry.image],
                width=info.width,
                height=info.height,
                spacing_mm=options.spacing_mm if options.spacing_mm is not None else info.spacing_mm,
                sha256=sha256_file(dst),
                groups=stack_groups(scanners[entry.image], entry.domains),
                patches=pages,
            )
        )
    manifest = Manifest(
        name=options.name or out_dir.name,
        cases=tuple(cases),
        task=CLASSIFICATION,
        source={
            "kind": "official-track2-ground-truth",
            "annotations": gt_path.name,
            "scanner_maps": [m.source for m in options.scanner_maps],
            "default_scanner": options.default_scanner,
            "spacing_mm": options.spacing_mm,
        },
    )
    return write_classification_test_set(out_dir, manifest, truth)


def read_figure_table(path: Path, kind: str) -> FigureTable:
    if kind == MIDOG25:
        return read_midog25_csv(path)
    if kind == AMIBR:
        return read_amibr_csv(path)
    raise ValueError(f"unknown figure table kind {kind!r}")


__all__ = [
    "AMIBR",
    "MIDOG25",
    "Figure",
    "FigureImportOptions",
    "FigureTable",
    "import_figures",
    "import_track2_ground_truth",
    "read_amibr_csv",
    "read_figure_table",
    "read_midog25_csv",
    "resolve_figure_scanners",
]
