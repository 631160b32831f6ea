"""Checks of an uploaded file before it is accepted: magic bytes per kind, and for predictions files the
scoring core's own parser (worker.evaluation.io) run against the phase's test-set cases, so that a bad file gets
a 422 naming the case and the point (U4): strict JSON (no NaN/Infinity), exactly 3 finite numbers per point,
probabilities in [0, 1], known names, every case present and no other, points inside their image.

Before parsing, the number of points is bounded from the raw bytes (every JSON point needs a '[', every CSV
point a line), so a file with 10^7 points is refused without building 10^7 Python objects.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.errors import InvalidInput
from app.models import SubmissionKind


class PredictionsInvalid(InvalidInput):
    code = "invalid_predictions"


class ArchiveInvalid(InvalidInput):
    code = "invalid_archive"


@dataclass(frozen=True)
class CaseExtent:
    """One test-set case: image extent in mm (None when the spacing is unknown) and its spacing."""

    width_mm: float | None
    height_mm: float | None
    spacing_mm: float | None = None


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
            out[name] = CaseExtent(float(info["width"]) * spacing, float(info["height"]) * spacing, float(spacing))
        else:
            out[name] = CaseExtent(None, None)
    return out


def predictions_suffix(head: bytes) -> str:
    """'.json' or '.csv' from the first bytes (the stored file keeps it; the scoring core reads by suffix)."""
    return ".json" if head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"{" else ".csv"


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


def validate_predictions(
    path: Path,
    *,
    cases: Mapping[str, CaseExtent],
    max_points_per_case: int,
    max_total_points: int,
    display_name: str = "predictions",
) -> PredictionsSummary:
    """Parse `path` (suffix .json or .csv) with the scoring core against the test set's cases; raise
    PredictionsInvalid naming the case and the point. `display_name` replaces the server path in messages."""
    from worker.evaluation.io import FormatError, check_cases, read_predictions

    with path.open("rb") as fh:
        data = fh.read()
    marker = b"[" if path.suffix == ".json" else b"\n"
    if data.count(marker) > max_total_points + 2 * len(cases) + 16:
        raise PredictionsInvalid(f"{display_name}: more than {max_total_points} points in total")
    del data
    spacing = {name: c.spacing_mm for name, c in cases.items() if c.spacing_mm is not None}
    extents = {
        name: (
            math.inf if c.width_mm is None else c.width_mm,
            math.inf if c.height_mm is None else c.height_mm,
        )
        for name, c in cases.items()
    }
    try:
        parsed = read_predictions(path, csv_units="mm", spacing_mm=spacing)
        resolved = check_cases(parsed, extents=extents, missing="error", source=display_name)
    except FormatError as exc:
        named = FormatError(exc.rule, source=display_name, case=exc.case, index=exc.index, field=exc.field)
        raise PredictionsInvalid(str(named)) from None
    except RecursionError:
        raise PredictionsInvalid(f"{display_name}: JSON nested too deeply") from None
    except UnicodeDecodeError:
        raise PredictionsInvalid(f"{display_name}: not UTF-8 text") from None
    total = 0
    for case, preds in resolved.items():
        if len(preds) > max_points_per_case:
            raise PredictionsInvalid(
                f"{display_name}: case {case!r}: {len(preds)} points exceed the limit of {max_points_per_case}"
            )
        total += len(preds)
    if total > max_total_points:
        raise PredictionsInvalid(f"{display_name}: more than {max_total_points} points in total")
    return PredictionsSummary(cases=len(resolved), points=total)


def validate_submission_archive(kind: SubmissionKind, path: Path) -> None:
    """Model archives and container images are checked at upload with the worker's own validators (sizes,
    members, manifest schema, image config), without loading anything; raise ArchiveInvalid with their line."""
    if kind is SubmissionKind.MODEL:
        from worker.archives import ArchiveError, validate_archive

        try:
            validate_archive(path)
        except ArchiveError as exc:
            raise ArchiveInvalid(str(exc)) from None
    elif kind is SubmissionKind.CONTAINER:
        from worker.containers.archive import ImageArchiveError, validate_image_archive

        try:
            validate_image_archive(path)
        except ImageArchiveError as exc:
            raise ArchiveInvalid(str(exc)) from None
