"""Import of real MIDOG data: MIDOG.json / MIDOG++.json or the official evaluation ground truth, plus TIFFs and
a case -> scanner map, into a test set (layout: worker.datasets.manifest).

Conversion (docs/scoring.md, Units and coordinates): a box [x1, y1, x2, y2] in pixels has its centre at ((x1+x2)/2,
(y1+y2)/2); mm = spacing_mm_per_px * pixel index, origin 0. Category "not mitotic figure" (2) is kept in the
copied MIDOG.json and never enters the official ground truth. Errors are one line naming the file and field,
e.g. ``MIDOG.json: annotations[17].bbox: expected 4 numbers``.

Imports the stdlib and worker.datasets only (tifffile through worker.datasets.tiff when images are read).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from worker.datasets.errors import DatasetError
from worker.datasets.manifest import (
    IMAGES_DIR,
    MITOTIC_FIGURE,
    NOT_MITOTIC_FIGURE,
    Case,
    Manifest,
    TestSet,
    sha256_file,
    write_test_set,
)

Progress = Callable[[int, int], None]

# ------------------------------------------------------------------------------------------ MIDOG.json


@dataclass(frozen=True)
class MidogImage:
    id: int
    file_name: str
    width: int
    height: int
    tumor_type: str | None
    # boxes [x1, y1, x2, y2] in pixels, in file order
    mitotic_figures: tuple[tuple[float, float, float, float], ...] = ()
    hard_negatives: tuple[tuple[float, float, float, float], ...] = ()

    @property
    def annotated(self) -> bool:
        return bool(self.mitotic_figures or self.hard_negatives)

    def centres_px(self) -> list[tuple[float, float]]:
        """Mitotic-figure box centres in pixels (x = column), in file order."""
        return [((x1 + x2) / 2, (y1 + y2) / 2) for x1, y1, x2, y2 in self.mitotic_figures]

    def points_mm(self, spacing_mm: float) -> list[list[float]]:
        """Official ground-truth points [x_mm, y_mm, 0] (docs/scoring.md, Units and coordinates; origin 0)."""
        return [[spacing_mm * x, spacing_mm * y, 0] for x, y in self.centres_px()]


@dataclass(frozen=True)
class MidogAnnotations:
    """A parsed MIDOG.json: its images (with their boxes) in file order, and the raw object for copying."""

    images: tuple[MidogImage, ...]
    raw: dict[str, Any] = field(repr=False)

    @property
    def mitotic_figure_count(self) -> int:
        return sum(len(im.mitotic_figures) for im in self.images)

    @property
    def hard_negative_count(self) -> int:
        return sum(len(im.hard_negatives) for im in self.images)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _plain_file_name(name: str) -> bool:
    return bool(name) and name not in {".", ".."} and "/" not in name and "\\" not in name and "\x00" not in name


def read_json_file(path: Path) -> Any:
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such file") from None
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path.name}: invalid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except ValueError as exc:
        raise DatasetError(f"{path.name}: {exc}") from None


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number JSON allows")


def parse_midog_json(obj: Any, *, source: str = "MIDOG.json") -> MidogAnnotations:
    """Validate and parse a MIDOG / MIDOG++ annotation database (COCO-like, bbox = [x1, y1, x2, y2] in px).

    Which category is the mitotic figure is read from `categories` by name ("mitotic figure"); without a
    categories list, 1 is the mitotic figure and every other id a hard negative.
    """
    if not isinstance(obj, dict):
        raise DatasetError(f"{source}: expected a JSON object with 'images' and 'annotations'")
    images_obj = obj.get("images")
    if not isinstance(images_obj, list):
        raise DatasetError(f"{source}: images: expected a list")
    annotations_obj = obj.get("annotations")
    if not isinstance(annotations_obj, list):
        raise DatasetError(f"{source}: annotations: expected a list")

    mf_ids: set[int] = {1}
    known: set[int] | None = None
    categories = obj.get("categories")
    if categories is not None:
        if not isinstance(categories, list):
            raise DatasetError(f"{source}: categories: expected a list")
        known = set()
        mf_ids = set()
        for i, cat in enumerate(categories):
            if not isinstance(cat, dict) or not _is_int(cat.get("id")):
                raise DatasetError(f"{source}: categories[{i}].id: expected an integer")
            name = cat.get("name")
            if not isinstance(name, str):
                raise DatasetError(f"{source}: categories[{i}].name: expected a string")
            known.add(cat["id"])
            if name.strip().lower() == MITOTIC_FIGURE:
                mf_ids.add(cat["id"])
        if not mf_ids:
            raise DatasetError(f"{source}: categories: no category named {MITOTIC_FIGURE!r}")

    by_id: dict[int, dict[str, Any]] = {}
    names: set[str] = set()
    order: list[int] = []
    for i, img in enumerate(images_obj):
        where = f"{source}: images[{i}]"
        if not isinstance(img, dict):
            raise DatasetError(f"{where}: expected an object")
        if not _is_int(img.get("id")):
            raise DatasetError(f"{where}.id: expected an integer")
        name = img.get("file_name")
        if not isinstance(name, str) or not _plain_file_name(name):
            raise DatasetError(f"{where}.file_name: expected a plain file name")
        for key in ("width", "height"):
            if not _is_int(img.get(key)) or img[key] <= 0:
                raise DatasetError(f"{where}.{key}: expected a positive integer")
        tumor = img.get("tumor_type")
        if tumor is not None and not isinstance(tumor, str):
            raise DatasetError(f"{where}.tumor_type: expected a string")
        if img["id"] in by_id:
            raise DatasetError(f"{where}.id: duplicate image id {img['id']}")
        if name in names:
            raise DatasetError(f"{where}.file_name: duplicate file name {name!r}")
        by_id[img["id"]] = {"img": img, "mf": [], "neg": []}
        names.add(name)
        order.append(img["id"])

    for i, ann in enumerate(annotations_obj):
        where = f"{source}: annotations[{i}]"
        if not isinstance(ann, dict):
            raise DatasetError(f"{where}: expected an object")
        image_id = ann.get("image_id")
        if not _is_int(image_id):
            raise DatasetError(f"{where}.image_id: expected an integer")
        if image_id not in by_id:
            raise DatasetError(f"{where}.image_id: no image with id {image_id}")
        cat = ann.get("category_id")
        if not _is_int(cat):
            raise DatasetError(f"{where}.category_id: expected an integer")
        if known is not None and cat not in known:
            raise DatasetError(f"{where}.category_id: unknown category {cat}")
        bbox = ann.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(_is_number(v) for v in bbox):
            raise DatasetError(f"{where}.bbox: expected 4 numbers")
        x1, y1, x2, y2 = (float(v) for v in bbox)
        if x2 < x1 or y2 < y1:
            raise DatasetError(f"{where}.bbox: expected [x1, y1, x2, y2] with x1 <= x2 and y1 <= y2")
        by_id[image_id]["mf" if cat in mf_ids else "neg"].append((x1, y1, x2, y2))

    images = tuple(
        MidogImage(
            id=by_id[k]["img"]["id"],
            file_name=by_id[k]["img"]["file_name"],
            width=by_id[k]["img"]["width"],
            height=by_id[k]["img"]["height"],
            tumor_type=by_id[k]["img"].get("tumor_type"),
            mitotic_figures=tuple(by_id[k]["mf"]),
            hard_negatives=tuple(by_id[k]["neg"]),
        )
        for k in order
    )
    return MidogAnnotations(images=images, raw=obj)


def load_midog_json(path: Path) -> MidogAnnotations:
    return parse_midog_json(read_json_file(path), source=path.name)


# ------------------------------------------------------------------------------------------ scanner maps

MIDOG2021_RANGES: tuple[tuple[int, int, str], ...] = (
    (1, 50, "Hamamatsu XR"),
    (51, 100, "Hamamatsu S360"),
    (101, 150, "Aperio CS2"),
    (151, 200, "Leica GT450"),
)
PRESETS = {"midog2021": MIDOG2021_RANGES}
_SPELLING = {"hamammatsu": "Hamamatsu"}  # MIDOG++ datasets_xvalidation.csv spells it "Hamammatsu XR"
_KEY_COLUMNS = ("image", "file_name", "filename", "file", "slide", "case", "name", "id")


def normalise_scanner(label: str) -> str:
    words = label.strip().split()
    return " ".join(_SPELLING.get(w.lower(), w) for w in words)


def case_keys(name: str) -> list[str]:
    """Keys under which a case may appear in a scanner map: '001.tiff' -> ['001.tiff', '001', '1']."""
    name = name.strip()
    keys = [name.lower()]
    stem = name.rsplit(".", 1)[0].lower() if "." in name else name.lower()
    if stem not in keys:
        keys.append(stem)
    if stem.isdigit() and str(int(stem)) not in keys:
        keys.append(str(int(stem)))
    return keys


@dataclass(frozen=True)
class ScannerMap:
    """Case -> scanner label. `entries` are keyed by case_keys(); `ranges` by numeric id (presets)."""

    source: str
    entries: Mapping[str, str] = field(default_factory=dict)
    ranges: tuple[tuple[int, int, str], ...] = ()

    def lookup(self, name: str) -> str | None:
        keys = case_keys(name)
        for key in keys:
            if key in self.entries:
                return self.entries[key]
        if self.ranges and keys[-1].isdigit():
            number = int(keys[-1])
            for lo, hi, label in self.ranges:
                if lo <= number <= hi:
                    return label
        return None


def load_scanner_map(spec: str) -> ScannerMap:
    """A preset name (`midog2021`) or a CSV file: `image,scanner` (comma) or the MIDOG++
    datasets_xvalidation.csv (`;`, columns Slide;...;Scanner;...). Scanner spellings are normalised."""
    if spec.lower() in PRESETS:
        return ScannerMap(source=spec.lower(), ranges=PRESETS[spec.lower()])
    path = Path(spec)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DatasetError(
            f"{spec}: no such scanner map (give a CSV file or a preset: {', '.join(sorted(PRESETS))})"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path.name}: cannot read ({exc})") from None
    return parse_scanner_csv(text, source=path.name)


def parse_scanner_csv(text: str, *, source: str) -> ScannerMap:
    first = text.split("\n", 1)[0]
    delimiter = ";" if first.count(";") > first.count(",") else ","
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        raise DatasetError(f"{source}: empty scanner map") from None
    key_col = next((header.index(c) for c in _KEY_COLUMNS if c in header), None)
    if key_col is None or "scanner" not in header:
        raise DatasetError(f"{source}: header must name an image column (image or slide) and a scanner column")
    scanner_col = header.index("scanner")
    entries: dict[str, str] = {}
    for line_no, row in enumerate(reader, start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) <= max(key_col, scanner_col):
            raise DatasetError(f"{source}: line {line_no}: expected {len(header)} columns")
        key, label = row[key_col].strip(), normalise_scanner(row[scanner_col])
        if not key or not label:
            raise DatasetError(f"{source}: line {line_no}: empty image or scanner")
        for k in case_keys(key):
            entries[k] = label
    return ScannerMap(source=source, entries=entries)


def resolve_scanners(names: Sequence[str], maps: Sequence[ScannerMap], *, default: str | None = None) -> dict[str, str]:
    """Scanner per case; later maps override earlier ones. Unmapped cases without a default: an error."""
    out: dict[str, str] = {}
    missing: list[str] = []
    for name in names:
        label = None
        for m in reversed(maps):
            label = m.lookup(name)
            if label is not None:
                break
        if label is None:
            label = default
        if label is None:
            missing.append(name)
        else:
            out[name] = label
    if missing:
        more = f" (and {len(missing) - 3} more)" if len(missing) > 3 else ""
        hint = "give --scanner-map (a CSV or the midog2021 preset) or --default-scanner"
        raise DatasetError(f"no scanner known for {', '.join(missing[:3])}{more}: {hint}")
    return out


# ------------------------------------------------------------------------------------------ import


class LinkMode(StrEnum):
    COPY = "copy"
    HARDLINK = "hardlink"  # falls back to a copy across file systems
    SYMLINK = "symlink"


@dataclass(frozen=True)
class ImportOptions:
    images_dir: Path | None = None  # None: annotations only (no images; spacing from spacing_mm)
    scanner_maps: tuple[ScannerMap, ...] = ()
    default_scanner: str | None = None
    spacing_mm: float | None = None  # overrides the TIFF resolution tags
    link: LinkMode = LinkMode.COPY
    skip_unannotated: bool = False  # MIDOG.json only: leave out images without any annotation
    name: str | None = None


def import_midog_json(
    out_dir: Path, annotations_path: Path, options: ImportOptions, *, progress: Progress | None = None
) -> TestSet:
    """Build a test set from a MIDOG.json / MIDOG++.json (and the images, unless annotations only)."""
    parsed = load_midog_json(annotations_path)
    images = [im for im in parsed.images if im.annotated or not options.skip_unannotated]
    if not images:
        raise DatasetError(f"{annotations_path.name}: no images to import")
    scanners = resolve_scanners([im.file_name for im in images], options.scanner_maps, default=options.default_scanner)
    cases: list[Case] = []
    gt: dict[str, list[list[float]]] = {}
    total = len(images)
    for i, im in enumerate(images):
        groups = {"scanner": scanners[im.file_name]}
        if im.tumor_type:
            groups["tumor type"] = im.tumor_type
        case = _materialise(
            out_dir,
            name=im.file_name,
            scanner=scanners[im.file_name],
            groups=groups,
            declared=(im.width, im.height, f"{annotations_path.name}: images[{i}]"),
            options=options,
        )
        assert case.spacing_mm is not None
        gt[im.file_name] = im.points_mm(case.spacing_mm)
        cases.append(case)
        if progress is not None:
            progress(i + 1, total)
    kept_ids = {im.id for im in images}
    raw = parsed.raw
    midog = {
        **{k: v for k, v in raw.items() if k not in {"images", "annotations"}},
        "images": [img for img in raw["images"] if img["id"] in kept_ids],
        "annotations": [a for a in raw["annotations"] if a["image_id"] in kept_ids],
    }
    midog.setdefault("categories", [{"id": 1, "name": MITOTIC_FIGURE}, {"id": 2, "name": NOT_MITOTIC_FIGURE}])
    manifest = Manifest(
        name=options.name or out_dir.name,
        cases=tuple(cases),
        source=_source("midog-json", annotations_path, options),
    )
    return write_test_set(out_dir, manifest, ground_truth=gt, midog_json=midog)


ROI_TYPES = ("hotspot", "challenging", "random")  # MIDOG 2025 Track 1
_GT_2025_HINT = '{"annotations": [[x_mm, y_mm, z], ...], "tumor domain": <int>, "roi type": "hotspot"}'


def _groups_2025(value: dict[str, Any], name: str, source: str) -> dict[str, str]:
    """The groups of one case of the 2025 variant: "tumor domain" (an integer), "roi type" (hotspot,
    challenging or random) and any other non-null scalar key, each as a string (the scoring core's labels)."""
    groups: dict[str, str] = {}
    for key, v in value.items():
        if key == "annotations" or v is None:
            continue
        if key == "tumor domain":
            if not _is_int(v):
                raise DatasetError(f"{source}: {name}: tumor domain: expected an integer, got {v!r} ({_GT_2025_HINT})")
        elif key == "roi type":
            if v not in ROI_TYPES:
                raise DatasetError(f"{source}: {name}: roi type: expected one of {', '.join(ROI_TYPES)}, got {v!r}")
        elif not isinstance(v, str | int | float | bool):
            raise DatasetError(f"{source}: {name}: {key}: expected a string or a number to group by, got {v!r}")
        groups[key] = str(v)
    return groups


def _numbers_first(value: str) -> tuple[bool, int, str]:
    """Sort key: integers in numeric order, then other strings."""
    return (not value.isdigit(), int(value) if value.isdigit() else 0, value)


def import_official_ground_truth(
    out_dir: Path, gt_path: Path, options: ImportOptions, *, progress: Progress | None = None
) -> TestSet:
    """Build a test set from the official evaluation ground truth (2022 or 2025 variant), which is in mm
    already. The 2025 variant (MIDOG 2025 Track 1: {"001.tiff": {"annotations": [...], "tumor domain": 0,
    "roi type": "hotspot"}}) keeps its `tumor domain` and `roi type` (and any other scalar key) as groups;
    a file mixing both variants is refused."""
    obj = read_json_file(gt_path)
    source = gt_path.name
    if not isinstance(obj, dict) or not obj:
        raise DatasetError(f"{source}: expected a non-empty object mapping image name -> points")
    gt: dict[str, Any] = {}
    extra: dict[str, dict[str, str]] = {}
    variants: set[str] = set()
    for name, value in obj.items():
        if not _plain_file_name(name):
            raise DatasetError(f"{source}: {name!r}: expected a plain image file name")
        groups: dict[str, str] = {}
        points = value
        if isinstance(value, dict):
            variants.add("2025")
            if "annotations" not in value:
                raise DatasetError(f'{source}: {name}: missing "annotations" (the 2025 variant is {_GT_2025_HINT})')
            points = value["annotations"]
            groups = _groups_2025(value, name, source)
        else:
            variants.add("2022")
        if len(variants) > 1:
            raise DatasetError(
                f"{source}: {name}: mixes the 2022 variant (a list of points) and the 2025 variant (an object with "
                '"annotations"); write every case the same way'
            )
        if not isinstance(points, list):
            raise DatasetError(f"{source}: {name}: expected a list of [x, y, z] points")
        for j, p in enumerate(points):
            if not isinstance(p, list) or len(p) != 3 or not all(_is_number(v) for v in p):
                raise DatasetError(f"{source}: {name}[{j}]: expected 3 finite numbers [x_mm, y_mm, z]")
        gt[name] = value
        extra[name] = groups
    names = list(gt)
    scanners = resolve_scanners(names, options.scanner_maps, default=options.default_scanner)
    cases: list[Case] = []
    for i, name in enumerate(names):
        cases.append(
            _materialise(
                out_dir,
                name=name,
                scanner=scanners[name],
                groups={"scanner": scanners[name], **extra[name]},
                declared=None,
                options=options,
            )
        )
        if progress is not None:
            progress(i + 1, len(names))
    variant = variants.pop()
    src = _source("official-ground-truth", gt_path, options)
    if variant == "2025":  # (2022 imports keep the source they always had)
        src["variant"] = variant
        for key in ("tumor domain", "roi type"):
            values = {g[key] for g in extra.values() if key in g}
            src[key.replace(" ", "_") + "s"] = sorted(values, key=_numbers_first)
    manifest = Manifest(name=options.name or out_dir.name, cases=tuple(cases), source=src)
    return write_test_set(out_dir, manifest, ground_truth=gt)


def _source(kind: str, path: Path, options: ImportOptions) -> dict[str, Any]:
    return {
        "kind": kind,
        "annotations": path.name,
        "scanner_maps": [m.source for m in options.scanner_maps],
        "spacing_mm": options.spacing_mm,
        "annotations_only": options.images_dir is None,
    }


def _materialise(
    out_dir: Path,
    *,
    name: str,
    scanner: str,
    groups: dict[str, str],
    declared: tuple[int, int, str] | None,
    options: ImportOptions,
) -> Case:
    """One case: read the image's size and spacing, check them, link or copy it, hash it."""
    if options.images_dir is None:
        if options.spacing_mm is None:
            raise DatasetError("--spacing-mm is needed without images (nothing to read the spacing from)")
        if declared is None:
            raise DatasetError("an official ground truth has no image sizes: give the images")
        return Case(
            name=name,
            image=None,
            scanner=scanner,
            width=declared[0],
            height=declared[1],
            spacing_mm=options.spacing_mm,
            sha256=None,
            groups=groups,
        )
    from worker.datasets.tiff import read_image_info

    src = options.images_dir / name
    if not src.is_file():
        raise DatasetError(f"{name}: no such image in {options.images_dir}")
    info = read_image_info(src)
    if declared is not None and (info.width, info.height) != declared[:2]:
        raise DatasetError(
            f"{declared[2]}: width/height {declared[0]}x{declared[1]} do not match the image "
            f"({info.width}x{info.height})"
        )
    spacing = options.spacing_mm if options.spacing_mm is not None else info.spacing_mm
    if spacing is None:
        raise DatasetError(f"{name}: no pixel spacing in the TIFF resolution tags; give --spacing-mm")
    dst = out_dir / IMAGES_DIR / name
    _link(src, dst, options.link)
    return Case(
        name=name,
        image=f"{IMAGES_DIR}/{name}",
        scanner=scanner,
        width=info.width,
        height=info.height,
        spacing_mm=spacing,
        sha256=sha256_file(dst),
        groups=groups,
    )


def _link(src: Path, dst: Path, mode: LinkMode) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists() or dst.is_symlink():
        dst.unlink()
    if mode is LinkMode.SYMLINK:
        os.symlink(src.resolve(), dst)
        return
    if mode is LinkMode.HARDLINK:
        try:
            os.link(src, dst)
            return
        except OSError:
            pass  # another file system: copy
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def unannotated(images: Iterable[MidogImage]) -> list[str]:
    return [im.file_name for im in images if not im.annotated]
