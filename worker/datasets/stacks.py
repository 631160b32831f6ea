"""Classification test sets (MIDOG 2025 Track 2): stacks of patches, their official ground truth, their summary.

A classification test set has the layout of worker.datasets.manifest with `"task": "classification"`:

    manifest.json                   each case is a stack: name "stack_<n>.tiff", image "images/stack_<n>.tiff",
                                    scanner, groups ("scanner", and "tumor domain" when the stack has one
                                    domain, which every writer here arranges), width/height = the patch size,
                                    spacing_mm, sha256, patches = the number of pages
    images/stack_<n>.tiff           a multi-page TIFF, one RGB uint8 patch per page (at most 16), each centred
                                    on one mitotic figure
    ground-truth/ground-truth.json  the official list [{"image", "labels": ["normal" | "atypical", ...],
                                    "tumordomains": [<int>, ...]}], one label and one domain per page, in order
    ground-truth/groups.csv         stack,scanner (and groups-tumor_domain.csv: stack,domain)
    ground-truth/patches.csv        where each page comes from (source image and pixel centre, or the synthetic
                                    figure's kind) with its label: for audits, never shown to participants

Patch centring (`patch_origin`): a patch of S pixels around a figure at pixel (x, y) starts at
round(x) - S // 2, so the figure lies on pixel S // 2 of the patch (64 of 128); outside the image is white.

Imports numpy and tifffile (through the functions that need it) and the stdlib; never torch or the service.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from worker.datasets.errors import DatasetError
from worker.datasets.manifest import (
    CLASSIFICATION,
    GROUND_TRUTH_DIR,
    GROUND_TRUTH_NAME,
    GROUPS_NAME,
    MANIFEST_NAME,
    Manifest,
    TestSet,
    write_bytes_atomic,
    write_groups_csv,
    write_json_atomic,
)

MAX_PATCHES = 16  # pages per stack in MIDOG 2025 Track 2
DEFAULT_PATCH_SIZE = 128
NORMAL = "normal"
ATYPICAL = "atypical"
LABELS = (NORMAL, ATYPICAL)
TUMOR_DOMAIN = "tumor domain"  # the group key (the detection 2025 ground truth's key too)
PATCHES_CSV = "patches.csv"

U8 = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class StackTruth:
    """One entry of the official Track 2 ground truth: a label and a tumour domain per page."""

    image: str
    labels: tuple[str, ...]
    domains: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {"image": self.image, "labels": list(self.labels), "tumordomains": list(self.domains)}


# ------------------------------------------------------------------------------------------ patches


def patch_origin(centre: float, size: int) -> int:
    """First pixel of a `size`-pixel patch centred on pixel coordinate `centre` (rounded half up)."""
    return math.floor(centre + 0.5) - size // 2


def cut_patch(image: U8, x: float, y: float, size: int, *, fill: int = 255) -> U8:
    """A size x size x 3 crop of an H x W x 3 image with (x, y) (x = column) on pixel (size // 2, size // 2);
    whatever lies outside the image is `fill` (white)."""
    height, width = image.shape[:2]
    x0, y0 = patch_origin(x, size), patch_origin(y, size)
    out = np.full((size, size, 3), fill, dtype=np.uint8)
    sx0, sy0 = max(x0, 0), max(y0, 0)
    sx1, sy1 = min(x0 + size, width), min(y0 + size, height)
    if sx0 < sx1 and sy0 < sy1:
        out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = image[sy0:sy1, sx0:sx1, :3]
    return out


def split_sizes(count: int, max_patches: int = MAX_PATCHES) -> list[int]:
    """Sizes of the fewest stacks of at most `max_patches` that hold `count` patches, as even as possible and
    larger first: 18 -> [9, 9], 33 -> [11, 11, 11], 17 -> [9, 8]."""
    if count <= 0:
        return []
    stacks = -(-count // max_patches)
    base, extra = divmod(count, stacks)
    return [base + 1] * extra + [base] * (stacks - extra)


def domain_mapping(names: Iterable[str]) -> dict[str, int]:
    """Tumour names -> integer tumour domains: the sorted distinct names numbered 0..K-1."""
    return {name: i for i, name in enumerate(sorted(set(names)))}


# ------------------------------------------------------------------------------------------ stack TIFFs


def write_stack_tiff(path: Path, patches: U8, spacing_mm: float | None) -> None:
    """Write N x S x S x 3 uint8 patches as an N-page uncompressed TIFF (resolution tags in pixels per cm when
    the spacing is known). Same patches and spacing -> same bytes; written via a temp file and a rename."""
    import tifffile

    if patches.dtype != np.uint8 or patches.ndim != 4 or patches.shape[3] != 3 or len(patches) == 0:
        raise ValueError(f"expected an N x H x W x 3 uint8 array with N >= 1, got {patches.dtype} {patches.shape}")
    extra: dict[str, Any] = {}
    if spacing_mm is not None:
        px_per_cm = 10.0 / spacing_mm
        extra = {"resolution": (px_per_cm, px_per_cm), "resolutionunit": "CENTIMETER"}
    buf = io.BytesIO()
    with tifffile.TiffWriter(buf) as tif:
        for page in patches:
            tif.write(
                np.ascontiguousarray(page),
                photometric="rgb",
                metadata=None,
                software="midog-eval",
                contiguous=False,
                **extra,
            )
    write_bytes_atomic(path, buf.getvalue())


def read_stack(path: Path) -> U8:
    """All pages of a stack TIFF as an N x H x W x 3 uint8 array (N >= 1, also for a single page)."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            pages = [np.asarray(page.asarray()) for page in tif.pages]
    except (OSError, ValueError, tifffile.TiffFileError) as exc:
        raise DatasetError(f"{path.name}: cannot read TIFF ({exc})") from None
    if not pages:
        raise DatasetError(f"{path.name}: a stack needs at least one page")
    shapes = {p.shape for p in pages}
    if len(shapes) != 1:
        raise DatasetError(f"{path.name}: the pages of a stack must have one size, got {sorted(shapes)}")
    arr = np.stack(pages)
    if arr.ndim != 4 or arr.shape[3] < 3 or arr.dtype != np.uint8:
        raise DatasetError(f"{path.name}: expected RGB uint8 pages, got {arr.dtype} {arr.shape[1:]}")
    return np.ascontiguousarray(arr[..., :3])


def stack_page_count(path: Path) -> int:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            return len(tif.pages)
    except (OSError, ValueError, tifffile.TiffFileError) as exc:
        raise DatasetError(f"{path.name}: cannot read TIFF ({exc})") from None


# ------------------------------------------------------------------------------------------ writing a set


def stack_groups(scanner: str, domains: Sequence[int]) -> dict[str, str]:
    """The manifest groups of a stack: its scanner, and its tumour domain when all its pages share one."""
    groups = {"scanner": scanner}
    if domains and len(set(domains)) == 1:
        groups[TUMOR_DOMAIN] = str(int(domains[0]))
    return groups


def write_classification_test_set(
    root: Path,
    manifest: Manifest,
    truth: Sequence[StackTruth],
    *,
    patches_csv: Sequence[Mapping[str, Any]] | None = None,
) -> TestSet:
    """Write the official ground truth (the list, in case order), the groups CSVs, patches.csv (when given:
    one row per page, keys as columns) and manifest.json (last, so a set with a manifest is complete)."""
    if manifest.task != CLASSIFICATION:
        raise ValueError("a classification test set needs a manifest with task 'classification'")
    by_name = {t.image: t for t in truth}
    if [c.name for c in manifest.cases] != [t.image for t in truth]:
        raise ValueError("the ground truth must list the manifest's stacks, in its order")
    for case in manifest.cases:
        entry = by_name[case.name]
        if case.patches != len(entry.labels) or len(entry.labels) != len(entry.domains):
            raise ValueError(f"{case.name}: patches, labels and tumour domains disagree")
    gt_dir = root / GROUND_TRUTH_DIR
    write_json_atomic(gt_dir / GROUND_TRUTH_NAME, [t.to_json() for t in truth])
    write_groups_csv(gt_dir / GROUPS_NAME, [(c.name, c.scanner) for c in manifest.cases])
    extra_keys = sorted({k for c in manifest.cases for k in c.groups} - {"scanner"})
    for key in extra_keys:
        safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in key)
        write_groups_csv(gt_dir / f"groups-{safe}.csv", [(c.name, c.groups.get(key, "")) for c in manifest.cases])
    if patches_csv is not None:
        write_bytes_atomic(gt_dir / PATCHES_CSV, _rows_csv(patches_csv))
    obj = json.loads(json.dumps(manifest.to_json()))
    write_json_atomic(root / MANIFEST_NAME, obj)
    return TestSet(root=root, manifest=Manifest.from_json(obj))


def _rows_csv(rows: Sequence[Mapping[str, Any]]) -> bytes:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row.get(c) is None else row[c] for c in columns])
    return buf.getvalue().encode("utf-8")


# ------------------------------------------------------------------------------------------ reading


def read_classification_truth(path: Path) -> list[StackTruth]:
    """The official Track 2 list with light validation (the scoring core's reader is the strict one)."""
    name = path.name
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read ({exc})") from None
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{name}: invalid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(obj, list):
        raise DatasetError(f"{name}: expected a list of stacks [{{'image', 'labels', 'tumordomains'}}, ...]")
    out: list[StackTruth] = []
    seen: set[str] = set()
    for i, entry in enumerate(obj):
        where = f"{name}[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("image"), str):
            raise DatasetError(f"{where}: expected an object with 'image', 'labels' and 'tumordomains'")
        image = entry["image"]
        labels, domains = entry.get("labels"), entry.get("tumordomains")
        if not isinstance(labels, list) or not labels or not all(label in LABELS for label in labels):
            raise DatasetError(f"{where} ({image}).labels: expected a non-empty list of 'normal' / 'atypical'")
        if (
            not isinstance(domains, list)
            or len(domains) != len(labels)
            or not all(isinstance(d, int) and not isinstance(d, bool) for d in domains)
        ):
            raise DatasetError(f"{where} ({image}).tumordomains: expected one integer per label")
        if image in seen:
            raise DatasetError(f"{where}: stack {image!r} is given twice")
        seen.add(image)
        out.append(StackTruth(image=image, labels=tuple(labels), domains=tuple(domains)))
    return out


# ------------------------------------------------------------------------------------------ summary


@dataclass(frozen=True)
class GroupRow:
    """Stacks, patches and atypical patches of one scanner or one tumour domain."""

    label: str
    stacks: int
    patches: int
    atypical: int | None  # None without a ground truth
    spacing_mm: tuple[float, float] | None = None
    sizes: tuple[str, ...] = ()

    @property
    def atypical_share(self) -> float | None:
        return self.atypical / self.patches if self.atypical is not None and self.patches else None


@dataclass(frozen=True)
class ClassificationSummary:
    stacks: int
    patches: int
    atypical: int | None  # None without a ground truth
    scanners: tuple[GroupRow, ...]
    domains: tuple[GroupRow, ...]  # by tumour domain of the ground truth (of the manifest without one)

    def to_json(self) -> dict[str, Any]:
        def row(r: GroupRow) -> dict[str, Any]:
            obj: dict[str, Any] = {
                "stacks": r.stacks,
                "patches": r.patches,
                "atypical": r.atypical,
                "atypical_share": r.atypical_share,
            }
            if r.sizes:
                obj["spacing_mm"] = list(r.spacing_mm) if r.spacing_mm else None
                obj["sizes"] = list(r.sizes)
            return obj

        return {
            "stacks": self.stacks,
            "patches": self.patches,
            "atypical": self.atypical,
            "atypical_share": (self.atypical / self.patches) if self.atypical is not None and self.patches else None,
            "scanners": [{"scanner": r.label, **row(r)} for r in self.scanners],
            "tumor_domains": [{"tumor_domain": r.label, **row(r)} for r in self.domains],
        }


def summarise_classification(test_set: TestSet) -> ClassificationSummary:
    """Per scanner and per tumour domain: stacks, patches, atypical patches (for `midog-eval dataset info`).
    Domains come from the ground truth (per page), or from the manifest's groups when there is none."""
    has_truth = test_set.ground_truth_path.exists()
    truth = {t.image: t for t in read_classification_truth(test_set.ground_truth_path)} if has_truth else {}
    cases = test_set.cases

    def atypical_in(names: Iterable[str]) -> int | None:
        return sum(truth[n].labels.count(ATYPICAL) for n in names if n in truth) if has_truth else None

    scanners: list[GroupRow] = []
    for scanner in test_set.manifest.scanners:
        mine = [c for c in cases if c.scanner == scanner]
        spacings = [c.spacing_mm for c in mine if c.spacing_mm is not None]
        scanners.append(
            GroupRow(
                label=scanner,
                stacks=len(mine),
                patches=sum(c.patches or 0 for c in mine),
                atypical=atypical_in(c.name for c in mine),
                spacing_mm=(min(spacings), max(spacings)) if spacings else None,
                sizes=tuple(dict.fromkeys(f"{c.width}x{c.height}" for c in mine)),
            )
        )
    per_domain: dict[str, list[int]] = {}  # domain -> [stacks, patches, atypical]
    for case in cases:
        entry = truth.get(case.name)
        if entry is not None:
            pages = [(str(d), label) for d, label in zip(entry.domains, entry.labels, strict=True)]
        else:
            pages = [(case.groups.get(TUMOR_DOMAIN, "?"), "")] * (case.patches or 0)
        for domain in dict.fromkeys(d for d, _ in pages):
            per_domain.setdefault(domain, [0, 0, 0])[0] += 1
        for domain, label in pages:
            per_domain[domain][1] += 1
            per_domain[domain][2] += label == ATYPICAL
    domains = tuple(
        GroupRow(label=d, stacks=v[0], patches=v[1], atypical=v[2] if has_truth else None)
        for d, v in sorted(per_domain.items(), key=lambda item: _domain_key(item[0]))
    )
    return ClassificationSummary(
        stacks=len(cases),
        patches=sum(c.patches or 0 for c in cases),
        atypical=atypical_in(c.name for c in cases),
        scanners=tuple(scanners),
        domains=domains,
    )


def _domain_key(label: str) -> tuple[int, int, str]:
    try:
        return (0, int(label), label)
    except ValueError:
        return (1, 0, label)


__all__ = [
    "ATYPICAL",
    "DEFAULT_PATCH_SIZE",
    "LABELS",
    "MAX_PATCHES",
    "NORMAL",
    "TUMOR_DOMAIN",
    "ClassificationSummary",
    "GroupRow",
    "StackTruth",
    "cut_patch",
    "domain_mapping",
    "patch_origin",
    "read_classification_truth",
    "read_stack",
    "split_sizes",
    "stack_groups",
    "stack_page_count",
    "summarise_classification",
    "write_classification_test_set",
    "write_stack_tiff",
]
