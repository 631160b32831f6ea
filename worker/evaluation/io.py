"""Readers and validators for ground-truth and prediction files. Standard library and numpy only.

Rules every reader enforces, with a one-line FormatError naming file, case, point and rule:
- strict JSON: NaN, Infinity and -Infinity are rejected, a key given twice in one object too (a case's
  predictions twice: json would silently keep the last), and nesting deeper than Python can parse;
- a point is exactly 3 finite numbers (booleans and strings are not numbers);
- a probability, when present and not null, is a finite number in [0, 1];
- a name, when present, is "mitotic figure" or "non-mitotic figure".
Under the midog2025 rules (`rules=`), as the official 2025 evaluator refuses: a point without "name", without
"probability" (null included) or without "point", a name other than the two (null included), and x or y below
-0.0075 mm or above 10 mm (pixel coordinates are the likely cause). Its ground truth must be the official 2025
format with a "tumor domain" (an integer or a string) and a "roi type" among ROI_TYPES for every case.
Prediction files: a JSON object mapping image name -> "Multiple points", a directory of per-image JSON files,
or a CSV. Ground truth: the official 2022/2025 formats or MIDOG.json (auto-detected).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from worker.evaluation.errors import FormatError
from worker.evaluation.types import (
    MITOTIC_FIGURE,
    NON_MITOTIC_FIGURE,
    ROI_TYPE,
    ROI_TYPES,
    TUMOR_DOMAIN,
    CasePredictions,
    GroundTruth,
    Rules,
)

__all__ = [
    "FormatError",
    "check_cases",
    "check_labels_2025",
    "load_ground_truth",
    "parse_multiple_points",
    "read_json",
    "read_predictions",
    "resolve_names",
]

MAX_POINTS_PER_CASE = 1_000_000
# midog2025: the official evaluator refuses x or y below minus its hit distance (7.5 um) or above 10 mm.
MIN_COORDINATE_MM_2025 = -7.5e-3
MAX_COORDINATE_MM_2025 = 10.0
_NAMES = {MITOTIC_FIGURE: True, NON_MITOTIC_FIGURE: False}
_NUMBER = (int, float)
SpacingArg = float | Mapping[str, float] | None
T = TypeVar("T")


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not allowed (numbers must be finite)")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """object_pairs_hook: a key given twice in one object is an error (json would keep the last silently)."""
    found = dict(pairs)
    if len(found) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"key {key!r} is given twice in one object")
            seen.add(key)
    return found


def read_json(path: Path | str, *, text: str | bytes | None = None) -> Any:
    """Parses strict JSON from a file (or the given text) with errors naming the file and the position."""
    source = str(path)
    try:
        raw = Path(path).read_bytes() if text is None else text
        return json.loads(raw, parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
    except FileNotFoundError:
        raise FormatError("file not found", source=source) from None
    except IsADirectoryError:
        raise FormatError("expected a file, found a directory", source=source) from None
    except json.JSONDecodeError as exc:
        raise FormatError(f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}", source=source) from None
    except RecursionError:
        raise FormatError("JSON nested too deeply", source=source) from None
    except UnicodeDecodeError:
        raise FormatError("not UTF-8 text", source=source) from None
    except ValueError as exc:  # raised by _reject_constant and _unique_keys
        raise FormatError(str(exc), source=source) from None


def _finite_point(value: Any, *, source: str, case: str, index: int, field: str = "point") -> list[float]:
    if type(value) is not list or len(value) != 3:
        raise FormatError("expected a list of exactly 3 numbers", source=source, case=case, index=index, field=field)
    for v in value:
        if type(v) not in _NUMBER:
            raise FormatError(
                f"coordinates must be numbers, got {type(v).__name__}",
                source=source,
                case=case,
                index=index,
                field=field,
            )
    try:
        coords = [float(v) for v in value]
    except OverflowError:
        raise FormatError("coordinate out of range", source=source, case=case, index=index, field=field) from None
    if not all(math.isfinite(c) for c in coords):
        raise FormatError("coordinates must be finite", source=source, case=case, index=index, field=field)
    return coords


def _probability(value: Any, *, source: str, case: str, index: int, required: bool = False) -> float:
    if value is None:
        if required:
            raise FormatError(
                "required under midog2025 (a number in [0, 1]), got null",
                source=source,
                case=case,
                index=index,
                field="probability",
            )
        return math.nan
    if type(value) not in _NUMBER:
        raise FormatError(
            f"must be a number, got {type(value).__name__}",
            source=source,
            case=case,
            index=index,
            field="probability",
        )
    p = float(value)
    if not (0.0 <= p <= 1.0):
        raise FormatError(f"must lie in [0, 1], got {p!r}", source=source, case=case, index=index, field="probability")
    return p


def _name(value: Any, *, source: str, case: str, index: int, required: bool = False) -> bool:
    if value is None and not required:
        return True
    mitotic = _NAMES.get(value) if isinstance(value, str) else None
    if mitotic is None:
        raise FormatError(
            f'must be "{MITOTIC_FIGURE}" or "{NON_MITOTIC_FIGURE}", got {value!r}',
            source=source,
            case=case,
            index=index,
            field="name",
        )
    return mitotic


def _check_range_2025(coords: list[float], *, source: str, case: str, index: int) -> None:
    """The official 2025 coordinate checks, in its order: x or y below -0.0075 mm, then x or y above 10 mm."""
    for axis, value in zip("xy", coords[:2], strict=True):
        if value < MIN_COORDINATE_MM_2025:
            raise FormatError(
                f"{axis} = {value!r} mm lies below {MIN_COORDINATE_MM_2025} mm (refused under midog2025)",
                source=source,
                case=case,
                index=index,
                field="point",
            )
    for axis, value in zip("xy", coords[:2], strict=True):
        if value > MAX_COORDINATE_MM_2025:
            raise FormatError(
                f"{axis} = {value!r} mm lies above {MAX_COORDINATE_MM_2025:g} mm (refused under midog2025): "
                "coordinates are in millimetres, pixel coordinates are the likely cause",
                source=source,
                case=case,
                index=index,
                field="point",
            )


def parse_multiple_points(
    obj: Any,
    *,
    source: str,
    case: str,
    max_points: int = MAX_POINTS_PER_CASE,
    rules: Rules | str = Rules.MIDOG2022,
) -> CasePredictions:
    """Validates one grand-challenge "Multiple points" object and returns its points (module rules; the
    stricter midog2025 checks under those rules)."""
    strict = Rules(rules) == Rules.MIDOG2025
    if not isinstance(obj, dict):
        raise FormatError(f'expected a "Multiple points" object, got {type(obj).__name__}', source=source, case=case)
    kind = obj.get("type", "Multiple points")
    if kind != "Multiple points":
        raise FormatError(f'type must be "Multiple points", got {kind!r}', source=source, case=case, field="type")
    items = obj.get("points")
    if type(items) is not list:
        raise FormatError('missing list "points"', source=source, case=case, field="points")
    if len(items) > max_points:
        raise FormatError(f"{len(items)} points exceed the limit of {max_points} per image", source=source, case=case)
    fast = _parse_points_fast(items, strict=strict)
    if fast is not None:
        return fast
    # The slow path validates point by point and raises the first error with its index.
    coords: list[list[float]] = []
    probs: list[float] = []
    mitotic: list[bool] = []
    for index, item in enumerate(items):
        if type(item) is not dict:
            raise FormatError("each point must be an object", source=source, case=case, index=index)
        for key in ("name", "probability") if strict else ():
            if key not in item:
                raise FormatError(f'missing "{key}" (required under midog2025)', source=source, case=case, index=index)
        if "point" not in item:
            raise FormatError('missing "point"', source=source, case=case, index=index)
        # midog2025 checks the name before the point, as the official evaluator does
        flag = _name(item["name"], source=source, case=case, index=index, required=True) if strict else None
        coords.append(_finite_point(item["point"], source=source, case=case, index=index))
        probs.append(_probability(item.get("probability"), source=source, case=case, index=index, required=strict))
        mitotic.append(_name(item.get("name"), source=source, case=case, index=index) if flag is None else flag)
        if strict:
            _check_range_2025(coords[-1], source=source, case=case, index=index)
    return CasePredictions.from_points(np.array(coords).reshape(-1, 3), probs, mitotic)


_NUMBER_TYPES = frozenset(_NUMBER)
_PROBABILITY_TYPES = frozenset((int, float, type(None)))
_NAME_VALUES = frozenset((None, MITOTIC_FIGURE, NON_MITOTIC_FIGURE))
_NAME_TYPES = frozenset((str, type(None)))  # before set(names): a list as a name is not hashable


def _parse_points_fast(items: list[Any], *, strict: bool = False) -> CasePredictions | None:
    """Validates a whole list at C speed; None when anything is off, so the slow path can name the error."""
    if not all(type(item) is dict for item in items):
        return None
    if strict and not all("name" in item and "probability" in item for item in items):
        return None
    points = [item.get("point") for item in items]
    if not all(type(p) is list and len(p) == 3 for p in points):
        return None
    if not set(map(type, (v for p in points for v in p))) <= _NUMBER_TYPES:
        return None
    probs = [item.get("probability") for item in items]
    names = [item.get("name") for item in items]
    if not set(map(type, probs)) <= _PROBABILITY_TYPES or not set(map(type, names)) <= _NAME_TYPES:
        return None
    if not set(names) <= _NAME_VALUES or (strict and (None in names or None in probs)):
        return None
    try:
        coords = np.array(points, dtype=np.float64).reshape(-1, 3)
    except OverflowError:
        return None
    probabilities = np.array(probs, dtype=np.float64).reshape(-1)  # None becomes NaN
    in_range = np.isnan(probabilities) | ((probabilities >= 0.0) & (probabilities <= 1.0))
    if not (np.isfinite(coords).all() and in_range.all()):
        return None
    if strict and ((coords[:, :2] < MIN_COORDINATE_MM_2025).any() or (coords[:, :2] > MAX_COORDINATE_MM_2025).any()):
        return None
    mitotic = np.array([name != NON_MITOTIC_FIGURE for name in names], dtype=bool)
    return CasePredictions(coords, probabilities, mitotic)


def read_predictions(
    path: Path | str,
    *,
    csv_units: str | None = None,
    spacing_mm: SpacingArg = None,
    rules: Rules | str = Rules.MIDOG2022,
) -> dict[str, CasePredictions]:
    """Reads predictions: a JSON mapping, a directory of <image stem>.json files, or a CSV (module rules;
    the stricter midog2025 checks under those rules).

    Keys are the names as given (file stems for a directory); `resolve_names` maps them to case names.
    """
    path = Path(path)
    rules = Rules(rules)
    if path.is_dir():
        files = sorted(path.glob("*.json"))
        if not files:
            raise FormatError("directory holds no .json prediction files", source=str(path))
        return {
            f.name[: -len(".json")]: parse_multiple_points(read_json(f), source=str(f), case=f.stem, rules=rules)
            for f in files
        }
    if path.suffix.lower() == ".csv":
        return _read_csv(path, units=csv_units, spacing_mm=spacing_mm, strict=rules == Rules.MIDOG2025)
    data = read_json(path)
    if not isinstance(data, dict):
        raise FormatError("expected a JSON object mapping image names to Multiple points", source=str(path))
    return {
        str(name): parse_multiple_points(obj, source=str(path), case=str(name), rules=rules)
        for name, obj in data.items()
    }


def _spacing_for(spacing_mm: SpacingArg, case: str, *, source: str, row: int) -> float:
    if spacing_mm is None:
        raise FormatError(
            "pixel coordinates need a pixel spacing (give --spacing-mm or use mm units)",
            source=source,
            case=case,
            index=row,
        )
    if isinstance(spacing_mm, Mapping):
        if case not in spacing_mm:
            raise FormatError("no pixel spacing known for this image", source=source, case=case, index=row)
        return float(spacing_mm[case])
    return float(spacing_mm)


def _csv_number(text: str, *, source: str, case: str, row: int, field: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise FormatError(f"not a number: {text!r}", source=source, case=case, index=row, field=field) from None
    if not math.isfinite(value):
        raise FormatError("must be finite", source=source, case=case, index=row, field=field)
    return value


def _read_csv(
    path: Path, *, units: str | None, spacing_mm: SpacingArg, strict: bool = False
) -> dict[str, CasePredictions]:
    """CSV with a header: image,x,y[,z][,probability][,name][,unit]; units from the flag or the `unit` column."""
    source = str(path)
    if units not in (None, "mm", "px"):
        raise FormatError(f"units must be mm or px, got {units!r}", source=source)
    rows: dict[str, tuple[list[list[float]], list[float], list[bool]]] = {}
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            return _csv_rows(
                csv.DictReader(handle), rows, source=source, units=units, spacing_mm=spacing_mm, strict=strict
            )
    except csv.Error as exc:
        # e.g. a field over the csv module's limit (131,072 characters): a refusal, never a crash
        raise FormatError(f"malformed CSV: {exc}", source=source) from None


def _csv_rows(
    reader: csv.DictReader[str],  # the rows, as csv reads them; a malformed one raises csv.Error
    rows: dict[str, tuple[list[list[float]], list[float], list[bool]]],
    *,
    source: str,
    units: str | None,
    spacing_mm: SpacingArg,
    strict: bool = False,
) -> dict[str, CasePredictions]:
    header = [h.strip() for h in (reader.fieldnames or [])]
    reader.fieldnames = header
    missing = [c for c in ("image", "x", "y") if c not in header]
    if missing:
        raise FormatError(f"CSV header lacks column(s) {', '.join(missing)}", source=source)
    unit_column = "unit" if "unit" in header else "units" if "units" in header else None
    if units is None and unit_column is None:
        raise FormatError("CSV units unknown: add a 'unit' column (mm or px) or pass --csv-units", source=source)
    for row_no, row in enumerate(reader, start=2):
        case = (row.get("image") or "").strip()
        if not case:
            raise FormatError("empty image name", source=source, index=row_no, field="image")
        xyz = [
            _csv_number(
                row.get(c) or "0" if c == "z" else row.get(c) or "",
                source=source,
                case=case,
                row=row_no,
                field=c,
            )
            for c in ("x", "y", "z")
        ]
        unit = (row.get(unit_column) or "").strip() if unit_column else units
        if unit_column and not unit:
            unit = units
        if unit == "px":
            spacing = _spacing_for(spacing_mm, case, source=source, row=row_no)
            xyz = [xyz[0] * spacing, xyz[1] * spacing, xyz[2]]
        elif unit != "mm":
            raise FormatError(
                f"unit must be mm or px, got {unit!r}",
                source=source,
                case=case,
                index=row_no,
                field="unit",
            )
        prob_text = (row.get("probability") or "").strip()
        name_text = (row.get("name") or "").strip()
        for field, text in (("name", name_text), ("probability", prob_text)) if strict else ():
            if not text:
                raise FormatError(
                    "required under midog2025, found empty", source=source, case=case, index=row_no, field=field
                )
        prob = (
            _probability(
                _csv_number(prob_text, source=source, case=case, row=row_no, field="probability"),
                source=source,
                case=case,
                index=row_no,
            )
            if prob_text
            else math.nan
        )
        mitotic = _name(name_text or None, source=source, case=case, index=row_no)
        if strict:
            _check_range_2025(xyz, source=source, case=case, index=row_no)
        points, probs, flags = rows.setdefault(case, ([], [], []))
        points.append(xyz)
        probs.append(prob)
        flags.append(mitotic)
    return {case: CasePredictions.from_points(p, pr, m) for case, (p, pr, m) in rows.items()}


def _points_array(value: Any, *, source: str, case: str, field: str) -> np.ndarray:
    if type(value) is not list:
        raise FormatError("expected a list of points", source=source, case=case, field=field)
    fast = _points_array_fast(value)
    if fast is not None:
        return fast
    # The slow path validates point by point and raises the first error with its index.
    coords = [_finite_point(v, source=source, case=case, index=i) for i, v in enumerate(value)]
    return np.array(coords, dtype=np.float64).reshape(-1, 3)


def _points_array_fast(value: list[Any]) -> np.ndarray | None:
    """A list of [x, y, z] numbers at C speed; None when anything is off, so the slow path can name the error."""
    if not all(type(p) is list and len(p) == 3 for p in value):
        return None
    if not {type(c) for p in value for c in p} <= _NUMBER_TYPES:
        return None
    try:
        coords = np.array(value, dtype=np.float64).reshape(-1, 3)
    except OverflowError:
        return None
    return coords if np.isfinite(coords).all() else None


def load_ground_truth(
    path: Path | str, *, spacing_mm: SpacingArg = None, rules: Rules | str = Rules.MIDOG2022
) -> GroundTruth:
    """Loads ground truth, detecting the official 2022 or 2025 format or the MIDOG.json training format.

    Under the midog2025 rules only the official 2025 format is accepted, each case with its "annotations", a
    "tumor domain" and a "roi type" among ROI_TYPES (check_labels_2025).
    """
    source = str(path)
    strict = Rules(rules) == Rules.MIDOG2025
    data = read_json(path)
    if isinstance(data, dict) and "images" in data and "annotations" in data:
        if strict:
            raise FormatError("MIDOG.json holds no roi types: midog2025 needs the official 2025 format", source=source)
        return _midog_json(data, source=source, spacing_mm=spacing_mm)
    if not isinstance(data, dict):
        raise FormatError("expected a JSON object mapping case names to points", source=source)
    cases: dict[str, np.ndarray] = {}
    labels: dict[str, dict[str, str]] = {}
    for name, entry in data.items():
        if isinstance(entry, dict):  # 2025: {"annotations": [...], "tumor domain": ..., "roi type": ...}
            if "annotations" not in entry:
                raise FormatError('missing "annotations"', source=source, case=name)
            if strict:
                _check_entry_2025(entry, source=source, case=name)
            cases[name] = _points_array(entry["annotations"], source=source, case=name, field="annotations")
            labels[name] = {str(k): str(v) for k, v in entry.items() if k != "annotations" and v is not None}
        elif strict:
            raise FormatError(
                'midog2025 needs the official 2025 format: {"annotations": [...], "tumor domain": ..., '
                '"roi type": ...} for every case',
                source=source,
                case=name,
            )
        else:
            cases[name] = _points_array(entry, source=source, case=name, field="points")
    return GroundTruth(cases=cases, labels=labels)


def _check_entry_2025(entry: dict[str, Any], *, source: str, case: str) -> None:
    """A 2025 case's labels as the official evaluator needs them (it refuses or fails without them)."""
    if ROI_TYPE not in entry:
        raise FormatError(f'missing "{ROI_TYPE}"', source=source, case=case)
    if entry[ROI_TYPE] not in ROI_TYPES:
        raise FormatError(
            f"unknown roi type {entry[ROI_TYPE]!r}, expected one of {', '.join(ROI_TYPES)}",
            source=source,
            case=case,
            field=ROI_TYPE,
        )
    if TUMOR_DOMAIN not in entry:
        raise FormatError(f'missing "{TUMOR_DOMAIN}"', source=source, case=case)
    if type(entry[TUMOR_DOMAIN]) not in (int, str):
        raise FormatError(
            f"expected an integer or a string, got {entry[TUMOR_DOMAIN]!r}",
            source=source,
            case=case,
            field=TUMOR_DOMAIN,
        )


def check_labels_2025(gt: GroundTruth, names: Iterable[str]) -> None:
    """Every named case carries a tumour domain and a roi type among ROI_TYPES (midog2025)."""
    for name in names:
        case_labels = gt.labels.get(name, {})
        if case_labels.get(ROI_TYPE) not in ROI_TYPES:
            raise FormatError(
                f"midog2025 needs a roi type among {', '.join(ROI_TYPES)}, got {case_labels.get(ROI_TYPE)!r}",
                source="ground truth",
                case=name,
            )
        if TUMOR_DOMAIN not in case_labels:
            raise FormatError("midog2025 needs a tumor domain", source="ground truth", case=name)


def _midog_json(data: dict[str, Any], *, source: str, spacing_mm: SpacingArg) -> GroundTruth:
    """MIDOG.json: pixel boxes [x1, y1, x2, y2]; centre * spacing -> mm; only "mitotic figure" is scored."""
    images = data["images"]
    if type(images) is not list:
        raise FormatError("images: expected a list", source=source)
    mitotic_ids = {
        c.get("id") for c in data.get("categories", []) if isinstance(c, dict) and c.get("name") == MITOTIC_FIGURE
    } or {1}
    by_id: dict[Any, str] = {}
    labels: dict[str, dict[str, str]] = {}
    for i, image in enumerate(images):
        if not isinstance(image, dict) or "id" not in image or not isinstance(image.get("file_name"), str):
            raise FormatError("needs an id and a file_name", source=source, field=f"images[{i}]")
        by_id[image["id"]] = image["file_name"]
        if isinstance(image.get("tumor_type"), str):
            labels[image["file_name"]] = {"tumor type": image["tumor_type"]}
    centres: dict[str, list[list[float]]] = {name: [] for name in by_id.values()}
    annotations = data["annotations"]
    if type(annotations) is not list:
        raise FormatError("annotations: expected a list", source=source)
    for i, ann in enumerate(annotations):
        field = f"annotations[{i}]"
        if not isinstance(ann, dict):
            raise FormatError("expected an object", source=source, field=field)
        if ann.get("category_id") not in mitotic_ids:
            continue
        name = by_id.get(ann.get("image_id"))
        if name is None:
            raise FormatError(f"unknown image_id {ann.get('image_id')!r}", source=source, field=f"{field}.image_id")
        box = ann.get("bbox")
        if type(box) is not list or len(box) != 4 or any(type(v) not in _NUMBER for v in box):
            raise FormatError("expected 4 numbers [x1, y1, x2, y2]", source=source, field=f"{field}.bbox")
        if not all(math.isfinite(float(v)) for v in box):
            raise FormatError("coordinates must be finite", source=source, field=f"{field}.bbox")
        spacing = _spacing_for(spacing_mm, name, source=source, row=i) if spacing_mm is not None else None
        if spacing is None:
            raise FormatError("MIDOG.json holds pixel boxes: give the pixel spacing (--spacing-mm)", source=source)
        centres[name].append([spacing * (box[0] + box[2]) / 2, spacing * (box[1] + box[3]) / 2, 0.0])
    cases = {name: np.array(pts, dtype=np.float64).reshape(-1, 3) for name, pts in centres.items()}
    return GroundTruth(cases=cases, labels=labels)


def resolve_names(
    predictions: Mapping[str, T], case_names: Iterable[str], *, source: str = "predictions"
) -> tuple[dict[str, T], list[str]]:
    """Maps prediction keys to case names (exact name, or the name without its extension).

    Returns (predictions keyed by case name, keys that match no case). Two keys for one case is an error.
    """
    names = list(case_names)
    exact = set(names)
    by_stem: dict[str, str] = {}
    for name in names:
        by_stem.setdefault(Path(name).stem, name)
    resolved: dict[str, T] = {}
    unknown: list[str] = []
    for key, value in predictions.items():
        case = key if key in exact else by_stem.get(key)
        if case is None:
            unknown.append(key)
            continue
        if case in resolved:
            raise FormatError("predictions given twice for this image", source=source, case=case)
        resolved[case] = value
    return resolved, unknown


def _name_list(names: list[str], limit: int = 10) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def check_cases(
    predictions: Mapping[str, CasePredictions],
    *,
    extents: Mapping[str, tuple[float, float]],
    missing: str = "error",
    source: str = "predictions",
) -> dict[str, CasePredictions]:
    """Server-side checks against a test set: known names only, no case missing (unless missing="fn"),
    every point inside its image (0 <= x <= width_mm, 0 <= y <= height_mm). Returns predictions by case name.
    """
    resolved, unknown = resolve_names(predictions, extents, source=source)
    if unknown:
        raise FormatError(f"unknown image name(s): {_name_list(sorted(unknown))}", source=source)
    absent = [name for name in extents if name not in resolved]
    if absent and missing == "error":
        raise FormatError(f"missing predictions for {len(absent)} image(s): {_name_list(absent)}", source=source)
    for case, preds in resolved.items():
        width, height = extents[case]
        pts = preds.points
        outside = (pts[:, 0] < 0) | (pts[:, 0] > width) | (pts[:, 1] < 0) | (pts[:, 1] > height)
        if outside.any():
            index = int(np.argmax(outside))
            x, y = pts[index, 0], pts[index, 1]
            raise FormatError(
                f"point ({x:g}, {y:g}) mm lies outside the image ({width:g} x {height:g} mm)",
                source=source,
                case=case,
                index=index,
            )
    return resolved
