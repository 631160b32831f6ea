"""The checks an uploaded file must pass before it is accepted, and their child-process entry point.

- Predictions (JSON or CSV) are parsed by the scoring core's own rules (worker.evaluation.io) against the
  phase's test-set cases: strict JSON, exactly 3 finite numbers per point, probabilities in [0, 1], known
  names, every case present and no other, points inside their image, bounded points per case and in all.
  A JSON file is read as a stream (ijson), one case at a time: memory is the largest case's objects plus
  compact arrays of the points already read, never the whole document as Python objects; a case given twice
  is refused by name; a top-level entry that is not a "Multiple points" object stops the read at once.
- Model tarballs of container submissions (weights for /opt/ml/model): worker.containers.model_tarball's
  one-pass check (files and folders only, safe names, size and count bounds).
- Model archives and container images: the worker's validators (members, sizes, manifest, image config),
  without loading anything; a model archive's manifest task must be the phase's (a detector for detection, a
  classifier for classification).
Errors are CheckFailedError with one line that names the case and the point.

`python -m app.submissions.checks` runs one check in a child process of the API (app.submissions.checker):
it reads a JSON request on stdin, first lowers its own limits (address space, CPU seconds), then prints one
JSON line: {"ok": true, "summary": {...}} or {"ok": false, "error": "..."}. Imports the standard library,
ijson and the worker's validators only: no database and no web framework, so the child starts quickly.
"""

from __future__ import annotations

import json
import math
import resource
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MEMORY_MESSAGE = "needs more memory to check than the server allows ({mib} MiB); split or simplify the file"


class CheckFailedError(Exception):
    """The file is refused; the message is one line for the participant."""


@dataclass(frozen=True)
class CaseExtent:
    """One test-set case: image extent in mm (None when the spacing is unknown) and its spacing."""

    width_mm: float | None
    height_mm: float | None
    spacing_mm: float | None = None


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


def _json_cases(path: Path, *, display_name: str, case_count: int, rules: str) -> dict[str, Any]:
    """{key: CasePredictions} read one top-level entry at a time (worker.evaluation.jsonstream: depth limit,
    duplicate keys, a BOM); duplicates and surplus keys stop the read."""
    from worker.evaluation.io import FormatError, parse_multiple_points
    from worker.evaluation.jsonstream import object_entries

    parsed: dict[str, Any] = {}
    try:
        with path.open("rb") as handle:
            entries = object_entries(handle, source=display_name, expected="mapping image names to Multiple points")
            for key, obj in entries:
                if key in parsed:
                    raise CheckFailedError(f"{display_name}: case {key!r} is given twice")
                if len(parsed) >= case_count + 1:
                    raise CheckFailedError(f"{display_name}: more entries than the test set's {case_count} cases")
                parsed[key] = parse_multiple_points(obj, source=display_name, case=key, rules=rules)
    except FormatError as exc:
        raise CheckFailedError(str(exc)) from None
    return parsed


def check_predictions(
    path: Path,
    *,
    cases: Mapping[str, CaseExtent],
    max_points_per_case: int,
    max_total_points: int,
    display_name: str = "predictions",
    stream: bool = True,
    rules: str = "midog2022",
) -> dict[str, int]:
    """Check `path` (suffix .json or .csv) against the test set's cases; {"cases", "points"} or CheckFailedError.

    `rules`: the phase's scoring rules; under midog2025 the stricter official 2025 checks apply (every point
    named and with a probability, coordinates within -0.0075..10 mm).

    `stream`: read a JSON file one case at a time (large files); otherwise parse it whole with the scoring
    core's reader, which is quicker for a small file.
    """
    from worker.evaluation.io import FormatError, check_cases, read_predictions

    marker = b"[" if path.suffix == ".json" else b"\n"
    count = 0
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            count += chunk.count(marker)
    # Every JSON point needs a '[' and every CSV point a line: too many points is known before any parsing.
    if count > max_total_points + 2 * len(cases) + 16:
        raise CheckFailedError(f"{display_name}: more than {max_total_points} points in total")
    spacing = {name: c.spacing_mm for name, c in cases.items() if c.spacing_mm is not None}
    extents = {
        name: (math.inf if c.width_mm is None else c.width_mm, math.inf if c.height_mm is None else c.height_mm)
        for name, c in cases.items()
    }
    try:
        if path.suffix == ".json" and stream:
            parsed = _json_cases(path, display_name=display_name, case_count=len(cases), rules=rules)
        else:
            parsed = read_predictions(path, csv_units="mm", spacing_mm=spacing, rules=rules)
        resolved = check_cases(parsed, extents=extents, missing="error", source=display_name)
    except FormatError as exc:
        named = FormatError(exc.rule, source=display_name, case=exc.case, index=exc.index, field=exc.field)
        raise CheckFailedError(str(named)) from None
    except RecursionError:
        raise CheckFailedError(f"{display_name}: JSON nested too deeply") from None
    except UnicodeDecodeError:
        raise CheckFailedError(f"{display_name}: not UTF-8 text") from None
    total = 0
    for case, preds in resolved.items():
        if len(preds) > max_points_per_case:
            raise CheckFailedError(
                f"{display_name}: case {case!r}: {len(preds)} points exceed the limit of {max_points_per_case}"
            )
        total += len(preds)
    if total > max_total_points:
        raise CheckFailedError(f"{display_name}: more than {max_total_points} points in total")
    return {"cases": len(resolved), "points": total}


def check_classifications(path: Path, *, patches: Mapping[str, int], display_name: str) -> dict[str, int]:
    """A Track 2 predictions file (JSON object stack -> outputs, or CSV image,index,class,confidence), checked
    as the scoring core reads it: every stack of the test set, one output per patch, the official field rules."""
    from worker.evaluation.classification import read_predictions
    from worker.evaluation.errors import FormatError

    try:
        read = read_predictions(path, patches, source=display_name)
    except FormatError as exc:
        raise CheckFailedError(str(exc)) from None
    return {"stacks": len(read), "patches": sum(len(p.classes) for p in read.values())}


def check_archive(kind: str, path: Path, *, max_bytes: int, task: str | None = None) -> None:
    """Model archives and container images, checked without loading anything, under the server's upload limit
    of the kind (`max_bytes`, which the workers apply too); CheckFailedError with their line. `task`, the
    phase's, when given: a model archive of another task is refused (its line names manifest.json's task)."""
    if kind == "model":
        from worker.archives import ArchiveError, ArchiveLimits, check_task, validate_archive

        try:
            manifest = validate_archive(path, limits=ArchiveLimits.for_upload(max_bytes))
            if task is not None:
                check_task(manifest, task)
        except ArchiveError as exc:
            raise CheckFailedError(str(exc)) from None
    elif kind == "container":
        from worker.containers.image_archive import ImageArchiveError, ImageLimits, validate_image_archive

        try:
            validate_image_archive(path, limits=ImageLimits.for_upload(max_bytes))
        except ImageArchiveError as exc:
            raise CheckFailedError(str(exc)) from None
    else:
        raise CheckFailedError(f"no check for {kind!r} files")


def check_model_tarball(path: Path, *, max_bytes: int, max_files: int) -> dict[str, Any]:
    """A container submission's model tarball (worker.containers.model_tarball's rules, which the worker
    applies again when it extracts it); {"files", "bytes", "sha256"} or CheckFailedError with its line."""
    from worker.containers.model_tarball import ModelTarballError
    from worker.containers.model_tarball import check_model_tarball as check

    try:
        checked = check(path, max_bytes=max_bytes, max_files=max_files)
    except ModelTarballError as exc:
        raise CheckFailedError(str(exc)) from None
    return {"files": checked.files, "bytes": checked.bytes, "sha256": checked.sha256}


def run(request: Mapping[str, Any]) -> dict[str, Any]:
    """One check described by `request` (what the child receives); the reply it prints."""
    path = Path(str(request["path"]))
    try:
        if request["kind"] == "predictions":
            extents = {name: CaseExtent(*values) for name, values in request["cases"].items()}
            summary = check_predictions(
                path,
                cases=extents,
                max_points_per_case=int(request["max_points_per_case"]),
                max_total_points=int(request["max_total_points"]),
                display_name=str(request.get("display_name") or "predictions"),
                rules=str(request.get("rules") or "midog2022"),
            )
            return {"ok": True, "summary": summary}
        if request["kind"] == "classifications":
            patches = {str(name): int(count) for name, count in request["patches"].items()}
            display = str(request.get("display_name") or "predictions")
            return {"ok": True, "summary": check_classifications(path, patches=patches, display_name=display)}
        if request["kind"] == "model_tarball":
            summary = check_model_tarball(
                path, max_bytes=int(request["max_bytes"]), max_files=int(request["max_files"])
            )
            return {"ok": True, "summary": summary}
        task = request.get("task")
        check_archive(
            str(request["kind"]), path, max_bytes=int(request["max_bytes"]), task=None if task is None else str(task)
        )
        return {"ok": True, "summary": {}}
    except CheckFailedError as exc:
        return {"ok": False, "error": str(exc)}


def _limit_self(memory_bytes: int, cpu_seconds: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    # The soft limit sends SIGXCPU (the process ends); the hard one a second later is the backstop.
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def main() -> None:
    request = json.loads(sys.stdin.buffer.read())
    _limit_self(int(request["memory_bytes"]), int(request["cpu_seconds"]))
    try:
        reply = run(request)
    except MemoryError:
        reply = {"ok": False, "error": MEMORY_MESSAGE.format(mib=int(request["memory_bytes"]) // 2**20)}
    sys.stdout.write(json.dumps(reply) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
