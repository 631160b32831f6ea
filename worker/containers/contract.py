"""The grand-challenge algorithm I/O contract: one sandboxed container run per case.

Detection (MIDOG 2021/2022, 2025 Track 1): per case the container sees exactly one image, read-only, at
- 2022/2025 layout: /input/images/histopathology-roi-cropout/<case stem>.tiff, described by
  /input/inputs.json (socket `histopathology-region-of-interest-cropout`)
- 2021 layout:      /input/<case stem>.tiff (no inputs.json: the 2021 evalutils containers read none)
and must write /output/mitotic-figures.json, a "Multiple points" object, validated with the scoring core's
parser (finite numbers, point count bound, names, probabilities) before it is accepted.

Classification (MIDOG 2025 Track 2; any layout): per case the container sees exactly one stack, a
multi-page TIFF with one patch per page, read-only at
/input/images/stacked-histopathology-roi-cropouts/<case stem>.tiff (socket `stacked-histopathology-roi-cropouts`
in /input/inputs.json) and must write
/output/multiple-mitotic-figure-classification.json: a list with one {"class": "normal" | "atypical",
"confidence": <float>} per page, in page order, validated with the Track 2 reader's rules
(worker.evaluation.classification.check_stack: exactly one item per patch, one of the two classes, a JSON
float confidence, finite).

A case that fails yields one participant-readable line built from the sandbox's flags, the parser's
message or the first cause in its log (worker.containers.causes); in hidden phases (the default) it is
from a fixed vocabulary, carries no value the container could choose and names no case, and the
organiser's detail (which does) is kept apart.

Imports the stdlib, worker.containers.causes, worker.evaluation and worker.sandbox only; must not import
Celery, SQLAlchemy, FastAPI or torch.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from worker.containers.causes import first_cause
from worker.evaluation.classification import check_stack
from worker.evaluation.errors import FormatError
from worker.evaluation.io import parse_multiple_points, read_json
from worker.sandbox import Backend, Mount, SandboxResult, SandboxSpec

Layout = Literal["2022", "2021"]
Task = Literal["detection", "classification"]
OUTPUT_NAME = "mitotic-figures.json"
CLASSIFICATION_OUTPUT_NAME = "multiple-mitotic-figure-classification.json"
STACKS_DIR = "/input/images/stacked-histopathology-roi-cropouts"
_MAX_OUTPUT_BYTES = 64 * 1024**2
_CASE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,200}$")


# The input socket of each task, as grand-challenge describes it in /input/inputs.json (the MIDOG 2025
# references pick their handler from the tuple of slugs).
SOCKETS: dict[str, tuple[str, str]] = {
    "detection": ("histopathology-region-of-interest-cropout", "images/histopathology-roi-cropout"),
    "classification": ("stacked-histopathology-roi-cropouts", "images/stacked-histopathology-roi-cropouts"),
}
INPUTS_JSON = "/input/inputs.json"


def _stem(case: str) -> str:
    return case[: -len(".tiff")] if case.endswith(".tiff") else case.rsplit(".", 1)[0]


def input_path(case: str, layout: Layout, task: Task = "detection") -> str:
    """Where the contract puts the image (classification: the stack) of `case` inside the container."""
    if task == "detection" and layout == "2021":
        return f"/input/{_stem(case)}.tiff"
    return f"/input/{SOCKETS[task][1]}/{_stem(case)}.tiff"


def inputs_document(case: str, layout: Layout, task: Task = "detection") -> list[dict[str, Any]] | None:
    """/input/inputs.json for `case` exactly as grand-challenge writes it; None for the 2021 layout (none)."""
    if task == "detection" and layout == "2021":
        return None
    slug, relative_path = SOCKETS[task]
    interface = {
        "slug": slug,
        "kind": "Image",
        "super_kind": "Image",
        "relative_path": relative_path,
        "example_value": None,
    }
    return [{"file": None, "image": {"name": f"{_stem(case)}.tiff"}, "value": None, "interface": interface}]


def write_inputs_json(case: str, layout: Layout, task: Task, destination: Path) -> Path | None:
    """Write inputs.json for `case` to `destination` (readable by the container's user); None: no file."""
    document = inputs_document(case, layout, task)
    if document is None:
        return None
    destination.parent.mkdir(parents=True, exist_ok=True)
    destination.write_text(json.dumps(document, indent=4), encoding="utf-8")
    destination.chmod(0o644)
    return destination


def output_name(task: Task) -> str:
    """The file the container must write under /output."""
    return CLASSIFICATION_OUTPUT_NAME if task == "classification" else OUTPUT_NAME


def _check_output(produced: Path, case: str, task: Task, patches: int | None) -> None:
    """Validate the container's output file as the scoring core reads it; FormatError when it is refused."""
    data = read_json(produced)
    if task == "classification":
        check_stack(case, data, expected=int(patches or 0))
    else:
        parse_multiple_points(data, source=OUTPUT_NAME, case=case)


@dataclass(frozen=True)
class CaseOutcome:
    """One case: a validated predictions file, or why there is none.

    `reason` is the participant's line; `detail` the organiser's (exit status, the parser's full message).
    """

    case: str
    predictions: Path | None
    reason: str | None
    detail: str | None = None
    sandbox: SandboxResult | None = field(default=None, repr=False)


def _failed(case: str, public: str, hidden_line: str, hidden: bool, result: SandboxResult | None) -> CaseOutcome:
    detail = f"case {case}: {public}"
    return CaseOutcome(case, None, hidden_line if hidden else detail, detail, result)


def failed_run(case: str, result: SandboxResult, hidden: bool) -> CaseOutcome:
    """A run the sandbox flags as failed: the limit it hit, else the first cause its log names."""
    reason = result.reason or "the program failed"
    exited = not (result.timed_out or result.memory_exceeded or result.output_exceeded)
    cause = first_cause(result.stdout_tail + "\n" + result.stderr_tail) if exited else None
    if cause is None:
        return _failed(case, reason, result.participant_reason(hidden=True) or reason, hidden, result)
    return _failed(case, f"{reason}: {cause.open}", cause.hidden, hidden, result)


def check_case_output(
    case: str, output_dir: Path, result: SandboxResult | None, *, hidden: bool, task: Task, patches: int | None
) -> CaseOutcome:
    """Accept the case's output file under `output_dir`, or say (one line) why it is refused."""
    name = output_name(task)
    produced = output_dir / name
    if not produced.is_file():
        line = f"no /output/{name} was written"
        return _failed(case, line, line, hidden, result)
    if produced.stat().st_size > _MAX_OUTPUT_BYTES:
        line = f"/output/{name} is too large"
        return _failed(case, line, line, hidden, result)
    try:
        _check_output(produced, case, task, patches)
    except FormatError as exc:
        line = f"invalid /output/{name}"
        return _failed(case, f"{line}: {exc.rule}", line, hidden, result)
    return CaseOutcome(case, produced, None, None, result)


def run_case(
    backend: Backend,
    base: SandboxSpec,
    *,
    case: str,
    image: Path,
    work_dir: Path,
    layout: Layout = "2022",
    hidden: bool = True,
    task: Task = "detection",
    patches: int | None = None,
) -> CaseOutcome:
    """Run the container once for `case` under `base` (image, limits, labels) and check its output.

    `task` "classification" mounts `image` as a stack and expects one output item per page (`patches`, the
    test set's count, required). In a hidden phase the participant's line carries no value the container
    chose (exit status, the content of a rejected field or the number of items, which case failed): each
    would be a channel out for hidden data.
    """
    if not _CASE.match(case):
        return CaseOutcome(case, None, f"case {case!r}: not a valid case name", f"case {case!r}: not a valid case name")
    if task == "classification" and not patches:
        raise ValueError(f"case {case}: a classification case needs its patch count")  # the caller's fault
    mounts = [Mount(image, input_path(case, layout, task))]
    described = write_inputs_json(case, layout, task, work_dir / "inputs" / f"{case}.json")
    if described is not None:
        mounts.append(Mount(described, INPUTS_JSON))
    spec = replace(base, mounts=(*base.mounts, *mounts))
    output_dir = work_dir / case
    result = backend.run(spec, [], output_dir=output_dir)
    if result.reason is not None:
        return failed_run(case, result, hidden)
    return check_case_output(case, output_dir, result, hidden=hidden, task=task, patches=patches)


def run_cases(
    backend: Backend,
    base: SandboxSpec,
    *,
    images: Mapping[str, Path],
    work_dir: Path,
    layout: Layout = "2022",
    hidden: bool = True,
    stop_on_failure: bool = True,
    task: Task = "detection",
    patches: Mapping[str, int] | None = None,
) -> list[CaseOutcome]:
    """Run every case in order; by default stop at the first failure (the evaluation fails with it).
    Classification needs `patches` (case -> the test set's patch count)."""
    outcomes: list[CaseOutcome] = []
    for case, image in images.items():
        count = None if patches is None else patches.get(case)
        outcome = run_case(
            backend,
            base,
            case=case,
            image=image,
            work_dir=work_dir,
            layout=layout,
            hidden=hidden,
            task=task,
            patches=count,
        )
        outcomes.append(outcome)
        if outcome.reason is not None and stop_on_failure:
            break
    return outcomes
