"""Test-set layout and its manifest: what a test set is on disk, read and written in one place.

A test set is a directory::

    manifest.json                  the task, and the cases: image file, scanner and group labels, size, spacing,
                                   sha256 (and, for classification, the number of patches of each stack)
    images/<case name>             the images (TIFF with resolution tags); the only part participants see
    ground-truth/ground-truth.json official evaluation format: detection {"001.tiff": [[x_mm, y_mm, 0], ...]}
                                   (or the 2025 variant with "annotations", "tumor domain", "roi type");
                                   classification [{"image", "labels": [...], "tumordomains": [...]}]
    ground-truth/MIDOG.json        training format (pixel boxes; category 2 = hard negatives), when known
    ground-truth/groups.csv        image,group (the scanner) for `midog-eval score --groups`
    ground-truth/groups-<key>.csv  one more per extra group key (e.g. tumor_type)
    preview.png                    optional montage (synthetic sets)

The manifest never holds anything derived from the ground truth, so it can be shown to participant code
together with the images. Imports the stdlib only.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worker.datasets.errors import DatasetError

MANIFEST_FORMAT = "midog-eval/test-set"
MANIFEST_VERSION = 1
MANIFEST_NAME = "manifest.json"
IMAGES_DIR = "images"
GROUND_TRUTH_DIR = "ground-truth"
GROUND_TRUTH_NAME = "ground-truth.json"
MIDOG_JSON_NAME = "MIDOG.json"
GROUPS_NAME = "groups.csv"
PREVIEW_NAME = "preview.png"

# What a test set is for: detection (points per image) or classification (a label per patch of a stack; the
# images are multi-page TIFFs of `patches` pages, each centred on one mitotic figure).
DETECTION = "detection"
CLASSIFICATION = "classification"
TASKS = (DETECTION, CLASSIFICATION)

MITOTIC_FIGURE = "mitotic figure"
NOT_MITOTIC_FIGURE = "not mitotic figure"


@dataclass(frozen=True)
class Case:
    """One image of a test set. `name` is the key of the case in the ground truth and in predictions."""

    name: str
    image: str | None  # path relative to the test-set directory; None for an annotations-only set
    scanner: str
    width: int
    height: int
    spacing_mm: float | None  # mm per pixel (square pixels); None when unknown (annotations-only import)
    sha256: str | None
    groups: dict[str, str] = field(default_factory=dict)  # always holds "scanner"
    patches: int | None = None  # classification: pages of the stack, one mitotic figure each

    def to_json(self) -> dict[str, Any]:
        obj = {
            "name": self.name,
            "image": self.image,
            "scanner": self.scanner,
            "groups": dict(sorted(self.groups.items())),
            "width": self.width,
            "height": self.height,
            "spacing_mm": self.spacing_mm,
            "sha256": self.sha256,
        }
        return obj if self.patches is None else {**obj, "patches": self.patches}

    @classmethod
    def from_json(cls, obj: Any, where: str) -> Case:
        if not isinstance(obj, dict):
            raise DatasetError(f"{where}: expected an object")
        name = _get(obj, "name", str, where)
        image = obj.get("image")
        if image is not None and not isinstance(image, str):
            raise DatasetError(f"{where}.image: expected a string or null")
        scanner = _get(obj, "scanner", str, where)
        width = _get(obj, "width", int, where)
        height = _get(obj, "height", int, where)
        if width <= 0 or height <= 0:
            raise DatasetError(f"{where}.width/height: expected positive integers")
        spacing = obj.get("spacing_mm")
        if spacing is not None and (
            isinstance(spacing, bool)
            or not isinstance(spacing, int | float)
            or not math.isfinite(spacing)
            or spacing <= 0
        ):
            raise DatasetError(f"{where}.spacing_mm: expected a positive number or null")
        sha = obj.get("sha256")
        if sha is not None and (not isinstance(sha, str) or len(sha) != 64):
            raise DatasetError(f"{where}.sha256: expected 64 hex digits or null")
        groups = obj.get("groups", {})
        if not isinstance(groups, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in groups.items()
        ):
            raise DatasetError(f"{where}.groups: expected an object of strings")
        groups = {"scanner": scanner, **groups}
        patches = obj.get("patches")
        if patches is not None and (not isinstance(patches, int) or isinstance(patches, bool) or patches <= 0):
            raise DatasetError(f"{where}.patches: expected a positive integer or null")
        return cls(
            patches=patches,
            name=name,
            image=image,
            scanner=scanner,
            width=width,
            height=height,
            spacing_mm=None if spacing is None else float(spacing),
            sha256=sha,
            groups=groups,
        )


def _get(obj: dict[str, Any], key: str, kind: type, where: str) -> Any:
    value = obj.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise DatasetError(f"{where}.{key}: expected {'an integer' if kind is int else 'a string'}")
    return value


@dataclass(frozen=True)
class Manifest:
    name: str
    cases: tuple[Case, ...]
    source: dict[str, Any] = field(default_factory=dict)
    task: str = DETECTION

    def to_json(self) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "name": self.name,
            "source": self.source,
            "cases": [case.to_json() for case in self.cases],
        }
        # detection manifests stay as they were written before tasks existed
        return obj if self.task == DETECTION else {**obj, "task": self.task}

    @classmethod
    def from_json(cls, obj: Any, where: str = MANIFEST_NAME) -> Manifest:
        if not isinstance(obj, dict) or obj.get("format") != MANIFEST_FORMAT:
            raise DatasetError(f"{where}: not a midog-eval test-set manifest (format != {MANIFEST_FORMAT!r})")
        if obj.get("version") != MANIFEST_VERSION:
            raise DatasetError(f"{where}.version: unsupported version {obj.get('version')!r}")
        cases_obj = obj.get("cases")
        if not isinstance(cases_obj, list):
            raise DatasetError(f"{where}.cases: expected a list")
        cases = tuple(Case.from_json(c, f"{where}: cases[{i}]") for i, c in enumerate(cases_obj))
        seen: set[str] = set()
        for i, case in enumerate(cases):
            if case.name in seen:
                raise DatasetError(f"{where}: cases[{i}].name: duplicate case {case.name!r}")
            seen.add(case.name)
        source = obj.get("source", {})
        task = obj.get("task", DETECTION)
        if task not in TASKS:
            raise DatasetError(f"{where}.task: expected one of {', '.join(TASKS)}, got {task!r}")
        if task == CLASSIFICATION:
            for i, case in enumerate(cases):
                if case.patches is None:
                    raise DatasetError(f"{where}: cases[{i}].patches: a classification stack needs its patch count")
        return cls(
            name=str(obj.get("name", "")),
            cases=cases,
            source=source if isinstance(source, dict) else {},
            task=task,
        )

    @property
    def scanners(self) -> list[str]:
        """Scanner labels in order of first appearance."""
        return list(dict.fromkeys(case.scanner for case in self.cases))


@dataclass(frozen=True)
class TestSet:
    """A test set on disk: its directory and its manifest."""

    __test__ = False  # not a pytest test class

    root: Path
    manifest: Manifest

    @classmethod
    def open(cls, root: str | os.PathLike[str]) -> TestSet:
        root = Path(root)
        path = root / MANIFEST_NAME
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise DatasetError(f"{path}: no test-set manifest here") from None
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}: invalid JSON ({exc.msg} at line {exc.lineno})") from None
        return cls(root=root, manifest=Manifest.from_json(obj, str(path)))

    @property
    def cases(self) -> tuple[Case, ...]:
        return self.manifest.cases

    @property
    def task(self) -> str:
        """detection or classification (the manifest's `task`)."""
        return self.manifest.task

    @property
    def ground_truth_path(self) -> Path:
        return self.root / GROUND_TRUTH_DIR / GROUND_TRUTH_NAME

    @property
    def midog_json_path(self) -> Path:
        return self.root / GROUND_TRUTH_DIR / MIDOG_JSON_NAME

    @property
    def groups_path(self) -> Path:
        return self.root / GROUND_TRUTH_DIR / GROUPS_NAME

    @property
    def preview_path(self) -> Path:
        return self.root / PREVIEW_NAME

    def image_path(self, case: Case) -> Path:
        if case.image is None:
            raise DatasetError(f"{self.root / MANIFEST_NAME}: case {case.name!r} has no image")
        return self.root / case.image

    def ground_truth(self) -> dict[str, list[list[float]]]:
        """The official ground truth, case name -> [[x_mm, y_mm, z], ...] (2025 variant unwrapped)."""
        return read_official_ground_truth(self.ground_truth_path)


def read_official_ground_truth(path: Path) -> dict[str, list[list[float]]]:
    """Read the official evaluation format (both variants) with light validation; the scoring core's own
    reader is the strict one."""
    name = path.name
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such file") from None
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{name}: invalid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(obj, dict):
        raise DatasetError(f"{name}: expected an object mapping image name -> points")
    out: dict[str, list[list[float]]] = {}
    for case, value in obj.items():
        points = value.get("annotations") if isinstance(value, dict) else value
        if not isinstance(points, list):
            raise DatasetError(f"{name}: {case}: expected a list of points")
        parsed: list[list[float]] = []
        for i, p in enumerate(points):
            if (
                not isinstance(p, list)
                or len(p) != 3
                or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in p)
                or not all(math.isfinite(v) for v in p)
            ):
                raise DatasetError(f"{name}: {case}[{i}]: expected 3 finite numbers")
            parsed.append([float(v) for v in p])
        out[case] = parsed
    return out


def scoring_digest(root: Path) -> str:
    """The digest of what scores a submission on this set: its manifest.json and its ground truth.

    Images are checked against the manifest's per-image sha256 at registration; hashing them here on every run
    would cost minutes per evaluation.
    """
    parts = {
        "manifest": sha256_file(root / MANIFEST_NAME),
        "ground_truth": sha256_file(root / GROUND_TRUTH_DIR / GROUND_TRUTH_NAME),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode("ascii")).hexdigest()


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_json_atomic(path: Path, obj: Any, *, indent: int | None = 1) -> None:
    """Deterministic JSON (same object -> same bytes), written via a temp file and a rename."""
    text = json.dumps(obj, indent=indent, ensure_ascii=False, allow_nan=False) + "\n"
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; test sets are read by other users (workers, sandbox)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_groups_csv(path: Path, labels: Iterable[tuple[str, str]]) -> None:
    lines = ["image,group"]
    for image, group in labels:
        lines.append(_csv_line([image, group]))
    write_bytes_atomic(path, ("\n".join(lines) + "\n").encode("utf-8"))


def _csv_line(values: list[str]) -> str:
    import io

    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow(values)
    return buf.getvalue()


def write_test_set(
    root: Path,
    manifest: Manifest,
    *,
    ground_truth: Mapping[str, Any],
    midog_json: Mapping[str, Any] | None = None,
) -> TestSet:
    """Write manifest.json, the official ground truth, MIDOG.json (when given) and the groups CSVs."""
    gt_dir = root / GROUND_TRUTH_DIR
    write_json_atomic(gt_dir / GROUND_TRUTH_NAME, dict(ground_truth))
    if midog_json is not None:
        write_json_atomic(gt_dir / MIDOG_JSON_NAME, dict(midog_json), indent=None)
    write_groups_csv(gt_dir / GROUPS_NAME, [(c.name, c.scanner) for c in manifest.cases])
    extra_keys = sorted({k for c in manifest.cases for k in c.groups} - {"scanner"})
    for key in extra_keys:
        safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in key)
        write_groups_csv(gt_dir / f"groups-{safe}.csv", [(c.name, c.groups.get(key, "")) for c in manifest.cases])
    obj = json.loads(json.dumps(manifest.to_json()))  # tuples -> lists: the same manifest as a re-read gives
    write_json_atomic(root / MANIFEST_NAME, obj)
    return TestSet(root=root, manifest=Manifest.from_json(obj))


@dataclass(frozen=True)
class ScannerSummary:
    scanner: str
    cases: int
    mitotic_figures: int
    hard_negatives: int | None  # category 2 ("not mitotic figure": imposters) when MIDOG.json is present
    spacing_mm: tuple[float, float] | None  # (min, max)
    sizes: tuple[str, ...]


def summarise(test_set: TestSet) -> list[ScannerSummary]:
    """Per-scanner summary for `midog-eval dataset info`."""
    gt = test_set.ground_truth() if test_set.ground_truth_path.exists() else {}
    negatives = _hard_negative_counts(test_set.midog_json_path)
    rows: list[ScannerSummary] = []
    for scanner in test_set.manifest.scanners:
        cases = [c for c in test_set.cases if c.scanner == scanner]
        spacings = [c.spacing_mm for c in cases if c.spacing_mm is not None]
        rows.append(
            ScannerSummary(
                scanner=scanner,
                cases=len(cases),
                mitotic_figures=sum(len(gt.get(c.name, [])) for c in cases),
                hard_negatives=None if negatives is None else sum(negatives.get(c.name, 0) for c in cases),
                spacing_mm=(min(spacings), max(spacings)) if spacings else None,
                sizes=tuple(dict.fromkeys(f"{c.width}x{c.height}" for c in cases)),
            )
        )
    return rows


def _hard_negative_counts(path: Path) -> dict[str, int] | None:
    if not path.exists():
        return None
    obj = json.loads(path.read_text(encoding="utf-8"))
    names = {img["id"]: img["file_name"] for img in obj.get("images", [])}
    mf_ids = {c["id"] for c in obj.get("categories", []) if c.get("name") == MITOTIC_FIGURE} or {1}
    counts: dict[str, int] = {}
    for ann in obj.get("annotations", []):
        if ann.get("category_id") not in mf_ids:
            name = names.get(ann.get("image_id"))
            if name is not None:
                counts[name] = counts.get(name, 0) + 1
    return counts


def share_images(root: Path) -> None:
    """Let the sandbox's uid read a test set's images and manifest (dirs 0755, files 0644) and traverse its
    root (0711), whatever umask wrote them; the ground truth keeps the modes it was written with."""
    root.chmod(0o711)
    manifest = root / MANIFEST_NAME
    if manifest.is_file():
        manifest.chmod(0o644)
    images = root / "images"
    if images.is_dir():
        images.chmod(0o755)
        for path in images.rglob("*"):
            if not path.is_symlink():
                path.chmod(0o755 if path.is_dir() else 0o644)
