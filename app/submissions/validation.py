"""Checks of an uploaded file before it is accepted: magic bytes per kind, and for predictions files a strict
parse against the phase's test-set cases, so that a bad file gets a 422 naming the case and the point (U4).

Formats accepted for predictions (millimetres, as in the evaluation spec section 6):
- JSON object: image name -> grand-challenge "Multiple points" object
  (`{"type": "Multiple points", "points": [{"point": [x, y, z], "probability": p, "name": n}, ...]}`)
  or a bare list of such point objects;
- CSV with a header `image,x,y[,z][,probability][,name]`.
Rules: every test-set case present and no other; exactly 3 finite numbers per point (NaN/Infinity refused);
x, y inside the image when its spacing is known; probability in [0, 1]; at most `max_points_per_case` points
per case and `max_total_points` in all; nesting bounded by the schema itself.

TODO(scoring core): once worker.evaluation exposes its predictions parser, call it here and keep only the
image-extent check; until then this is the strict reader the API uses.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.errors import InvalidInput
from app.models import SubmissionKind


class PredictionsInvalid(InvalidInput):
    code = "invalid_predictions"


@dataclass(frozen=True)
class CaseExtent:
    """Image extent of one test-set case in mm (None when the spacing is unknown)."""

    width_mm: float | None
    height_mm: float | None


@dataclass(frozen=True)
class PredictionsSummary:
    cases: int
    points: int


def case_extents(cases: Mapping[str, Any]) -> dict[str, CaseExtent]:
    """From a TestSet.cases mapping (name -> {"width", "height", "spacing_mm", ...})."""
    out: dict[str, CaseExtent] = {}
    for name, info in cases.items():
        spacing = info.get("spacing_mm")
        if spacing:
            out[name] = CaseExtent(float(info["width"]) * spacing, float(info["height"]) * spacing)
        else:
            out[name] = CaseExtent(None, None)
    return out


def check_magic(kind: SubmissionKind, head: bytes) -> None:
    """The file's first bytes must match its kind (Content-Type is never trusted)."""
    if kind is SubmissionKind.PREDICTIONS:
        if b"\x00" in head:
            raise InvalidInput("a predictions file must be JSON or CSV text")
        stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n")
        if stripped[:1] == b"{":
            return
        first_line = stripped.split(b"\n", 1)[0]
        if b"," in first_line and first_line.lower().startswith(b"image"):
            return
        raise InvalidInput("a predictions file must be a JSON object or a CSV starting with an `image,...` header")
    is_zip = head.startswith(b"PK\x03\x04")
    is_tar = len(head) >= 262 and head[257:262] == b"ustar"
    is_gzip = head.startswith(b"\x1f\x8b")
    is_zstd = head.startswith(b"\x28\xb5\x2f\xfd")
    is_xz = head.startswith(b"\xfd7zXZ\x00")
    if kind is SubmissionKind.MODEL and (is_zip or is_tar or is_gzip):
        return
    if kind is SubmissionKind.CONTAINER and (is_tar or is_gzip or is_zstd or is_xz):
        return
    expected = "a zip or tar(.gz) archive" if kind is SubmissionKind.MODEL else "an OCI/docker image tar archive"
    raise InvalidInput(f"a {kind.value} submission must be {expected}")


def _reject_constant(token: str) -> Any:
    raise PredictionsInvalid(f"{token} is not allowed; numbers must be finite")


def validate_predictions(
    path: Path,
    *,
    cases: Mapping[str, CaseExtent],
    max_points_per_case: int,
    max_total_points: int,
) -> PredictionsSummary:
    """Parse `path` strictly against the test set's cases; raise PredictionsInvalid naming case and point."""
    data = path.read_bytes()
    # every point is at least one '[' (JSON) or one line (CSV): bound the work before building objects
    brackets = data.count(b"[") if data.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"{" else data.count(b"\n")
    if brackets > max_total_points + 2 * len(cases) + 16:
        raise PredictionsInvalid(f"predictions: more than {max_total_points} points in total")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PredictionsInvalid(f"predictions: not UTF-8 (byte {exc.start})") from None
    del data
    per_case = _parse_json(text) if text.lstrip()[:1] == "{" else _parse_csv(text)
    return _check(per_case, cases, max_points_per_case, max_total_points)


Point = tuple[float, float, float, float | None]


def _parse_json(text: str) -> dict[str, list[Any]]:
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise PredictionsInvalid("predictions: JSON nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise PredictionsInvalid(f"predictions: invalid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(obj, dict):
        raise PredictionsInvalid("predictions: expected a JSON object mapping image name -> points")
    out: dict[str, list[Any]] = {}
    for case, value in obj.items():
        if isinstance(value, dict):
            if value.get("type", "Multiple points") != "Multiple points":
                raise PredictionsInvalid(f"{case}: type must be 'Multiple points'")
            points = value.get("points")
        else:
            points = value
        if not isinstance(points, list):
            raise PredictionsInvalid(f"{case}: points: expected a list")
        out[case] = points
    return out


def _parse_csv(text: str) -> dict[str, list[Any]]:
    reader = csv.reader(io.StringIO(text))
    header = [h.strip().lower() for h in next(reader, [])]
    for required in ("image", "x", "y"):
        if required not in header:
            raise PredictionsInvalid(f"predictions CSV: header lacks the `{required}` column")
    col = {name: i for i, name in enumerate(header)}
    out: dict[str, list[Any]] = {}
    for line, row in enumerate(reader, start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise PredictionsInvalid(f"predictions CSV line {line}: expected {len(header)} columns, got {len(row)}")
        image = row[col["image"]].strip()
        values: list[Any] = []
        for axis in ("x", "y", "z"):
            if axis in col:
                raw = row[col[axis]].strip()
                try:
                    values.append(float(raw))
                except ValueError:
                    raise PredictionsInvalid(f"{image}: line {line}: {axis} = {raw!r} is not a number") from None
            else:
                values.append(0.0)
        point: dict[str, Any] = {"point": values}
        if "probability" in col and row[col["probability"]].strip():
            raw = row[col["probability"]].strip()
            try:
                point["probability"] = float(raw)
            except ValueError:
                raise PredictionsInvalid(f"{image}: line {line}: probability {raw!r} is not a number") from None
        if "name" in col and row[col["name"]].strip():
            point["name"] = row[col["name"]].strip()
        out.setdefault(image, []).append(point)
    return out


def _check(
    per_case: dict[str, list[Any]],
    cases: Mapping[str, CaseExtent],
    max_points_per_case: int,
    max_total_points: int,
) -> PredictionsSummary:
    unknown = [c for c in per_case if c not in cases]
    if unknown:
        raise PredictionsInvalid(f"unknown case(s) not in the test set: {', '.join(map(repr, unknown[:10]))}")
    missing = [c for c in cases if c not in per_case]
    if missing:
        shown = ", ".join(map(repr, missing[:10])) + (" ..." if len(missing) > 10 else "")
        raise PredictionsInvalid(f"{len(missing)} case(s) missing from the predictions: {shown}")
    total = 0
    for case, points in per_case.items():
        if len(points) > max_points_per_case:
            raise PredictionsInvalid(f"{case}: points: {len(points)} points, at most {max_points_per_case} allowed")
        total += len(points)
        if total > max_total_points:
            raise PredictionsInvalid(f"predictions: more than {max_total_points} points in total")
        extent = cases[case]
        for i, item in enumerate(points):
            _check_point(case, i, item, extent)
    return PredictionsSummary(cases=len(per_case), points=total)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _check_point(case: str, i: int, item: Any, extent: CaseExtent) -> None:
    where = f"{case}: points[{i}]"
    if isinstance(item, dict):
        coords = item.get("point")
        prob = item.get("probability")
        name = item.get("name")
    else:
        coords, prob, name = item, None, None
    if not isinstance(coords, list) or len(coords) != 3 or not all(_is_number(v) for v in coords):
        raise PredictionsInvalid(f"{where}.point: expected exactly 3 numbers [x, y, z] in mm")
    for axis, v in zip("xyz", coords, strict=True):
        if not math.isfinite(v):
            raise PredictionsInvalid(f"{where}.point: {axis} is not finite")
    x, y = float(coords[0]), float(coords[1])
    if extent.width_mm is not None and extent.height_mm is not None:
        tol = 1e-9
        if not (-tol <= x <= extent.width_mm + tol):
            raise PredictionsInvalid(f"{where}.point: x = {x} mm is outside the image (0 to {extent.width_mm:.6g} mm)")
        if not (-tol <= y <= extent.height_mm + tol):
            raise PredictionsInvalid(f"{where}.point: y = {y} mm is outside the image (0 to {extent.height_mm:.6g} mm)")
    if prob is not None and (not _is_number(prob) or not math.isfinite(prob) or not 0.0 <= prob <= 1.0):
        raise PredictionsInvalid(f"{where}.probability: expected a number in [0, 1]")
    if name is not None and (not isinstance(name, str) or len(name) > 100):
        raise PredictionsInvalid(f"{where}.name: expected a short string")
