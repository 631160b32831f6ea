"""The grand-challenge algorithm I/O contract: one sandboxed container run per case.

Per case the container sees exactly one image, read-only, at
- 2022/2025 layout: /input/images/histopathology-roi-cropout/<case stem>.tiff
- 2021 layout:      /input/<case stem>.tiff
and must write /output/mitotic-figures.json, a "Multiple points" object. The file is validated with the
scoring core's parser (finite numbers, point count bound, names, probabilities) before it is accepted.
A case that fails yields one participant-readable line built from the sandbox's flags or the parser's
message, never from the container's logs.

Imports the stdlib, worker.evaluation and worker.sandbox only; must not import Celery, SQLAlchemy, FastAPI
or torch.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from worker.evaluation.errors import FormatError
from worker.evaluation.io import parse_multiple_points, read_json
from worker.sandbox import Backend, Mount, SandboxResult, SandboxSpec

Layout = Literal["2022", "2021"]
OUTPUT_NAME = "mitotic-figures.json"
_MAX_OUTPUT_BYTES = 64 * 1024**2
_CASE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,200}$")


def input_path(case: str, layout: Layout) -> str:
    """Where the contract puts the image of `case` inside the container."""
    stem = case[: -len(".tiff")] if case.endswith(".tiff") else case.rsplit(".", 1)[0]
    if layout == "2021":
        return f"/input/{stem}.tiff"
    return f"/input/images/histopathology-roi-cropout/{stem}.tiff"


@dataclass(frozen=True)
class CaseOutcome:
    """The result of one case: a validated predictions file, or one line saying why there is none."""

    case: str
    predictions: Path | None
    reason: str | None
    sandbox: SandboxResult | None = field(default=None, repr=False)


def run_case(
    backend: Backend,
    base: SandboxSpec,
    *,
    case: str,
    image: Path,
    work_dir: Path,
    layout: Layout = "2022",
) -> CaseOutcome:
    """Run the container once for `case` under `base` (image, limits, labels) and check its output."""
    if not _CASE.match(case):
        return CaseOutcome(case, None, f"case {case!r}: not a valid case name")
    spec = replace(base, mounts=(*base.mounts, Mount(image, input_path(case, layout))))
    output_dir = work_dir / case
    result = backend.run(spec, [], output_dir=output_dir)
    if result.reason is not None:
        return CaseOutcome(case, None, f"case {case}: {result.reason}", result)
    produced = output_dir / OUTPUT_NAME
    if not produced.is_file():
        return CaseOutcome(case, None, f"case {case}: no /output/{OUTPUT_NAME} was written", result)
    if produced.stat().st_size > _MAX_OUTPUT_BYTES:
        return CaseOutcome(case, None, f"case {case}: /output/{OUTPUT_NAME} is too large", result)
    try:
        parse_multiple_points(read_json(produced), source=OUTPUT_NAME, case=case)
    except FormatError as exc:
        return CaseOutcome(case, None, f"case {case}: invalid /output/{OUTPUT_NAME}: {exc.rule}", result)
    return CaseOutcome(case, produced, None, result)


def run_cases(
    backend: Backend,
    base: SandboxSpec,
    *,
    images: Mapping[str, Path],
    work_dir: Path,
    layout: Layout = "2022",
    stop_on_failure: bool = True,
) -> list[CaseOutcome]:
    """Run every case in order; by default stop at the first failure (the evaluation fails with it)."""
    outcomes: list[CaseOutcome] = []
    for case, image in images.items():
        outcome = run_case(backend, base, case=case, image=image, work_dir=work_dir, layout=layout)
        outcomes.append(outcome)
        if outcome.reason is not None and stop_on_failure:
            break
    return outcomes


def first_failure(outcomes: Sequence[CaseOutcome]) -> str | None:
    return next((o.reason for o in outcomes if o.reason is not None), None)
