"""`midog-eval score`: scores a predictions file against a ground truth with the official MIDOG rules.

Imports only the scoring core, typer and the standard library (no web service, no worker, no torch).
Exit codes: 0 success, 2 invalid input (one line on stderr naming the problem).
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from worker.evaluation.errors import FormatError
from worker.evaluation.io import load_ground_truth, read_json, read_predictions
from worker.evaluation.metrics import evaluate
from worker.evaluation.types import DEFAULT_RADIUS_MM, MissingCases, Rules

EXIT_INVALID_INPUT = 2


def read_groups(path: Path) -> dict[str, str]:
    """Case -> group label from a JSON object or a CSV with the columns image,group (header required)."""
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            fields = [f.strip() for f in reader.fieldnames or []]
            reader.fieldnames = fields
            if "image" not in fields or "group" not in fields:
                raise FormatError("CSV header must have the columns image,group", source=str(path))
            groups = {}
            for row_no, row in enumerate(reader, start=2):
                image, group = (row.get("image") or "").strip(), (row.get("group") or "").strip()
                if not image or not group:
                    raise FormatError("empty image or group", source=str(path), index=row_no)
                groups[image] = group
            return groups
    data = read_json(path)
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise FormatError("expected a JSON object mapping image names to group labels", source=str(path))
    return data


def score_command(
    ground_truth: Annotated[
        Path,
        typer.Option("--ground-truth", help="Official 2022/2025 ground truth, or MIDOG.json with --spacing-mm"),
    ],
    predictions: Annotated[
        Path,
        typer.Option(
            "--predictions",
            help="JSON mapping image -> Multiple points, a directory of <stem>.json, or a CSV",
        ),
    ],
    groups: Annotated[
        Path | None,
        typer.Option("--groups", help="JSON object or CSV (image,group): scanner/domain per image"),
    ] = None,
    rules: Annotated[Rules, typer.Option("--rules", help="Which official evaluation to reproduce")] = Rules.MIDOG2022,
    missing_cases: Annotated[
        MissingCases,
        typer.Option("--missing-cases", help="error: reject; fn: score as misses; skip: leave out (official)"),
    ] = MissingCases.ERROR,
    radius_mm: Annotated[float, typer.Option("--radius-mm", help="Hit radius in mm (inclusive)")] = DEFAULT_RADIUS_MM,
    bootstrap: Annotated[int, typer.Option("--bootstrap", min=0, help="Bootstrap resamples for 95% CIs")] = 0,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the bootstrap")] = 0,
    csv_units: Annotated[
        str | None,
        typer.Option("--csv-units", help="Units of CSV coordinates when there is no unit column: mm or px"),
    ] = None,
    spacing_mm: Annotated[
        float | None,
        typer.Option("--spacing-mm", help="Pixel spacing (mm/px) for MIDOG.json or px CSV input"),
    ] = None,
    optimal: Annotated[
        bool, typer.Option("--optimal", help="Add counts of an optimal (max-cardinality) matching")
    ] = False,
    output: Annotated[Path | None, typer.Option("--output", help="Write metrics.json here instead of stdout")] = None,
) -> None:
    """Score detections per case, per group and overall (precision, recall, F1, AP)."""
    try:
        gt = load_ground_truth(ground_truth, spacing_mm=spacing_mm)
        preds = read_predictions(predictions, csv_units=csv_units, spacing_mm=spacing_mm)
        report = evaluate(
            gt,
            preds,
            groups=read_groups(groups) if groups else None,
            rules=rules,
            missing_cases=missing_cases,
            radius_mm=radius_mm,
            bootstrap=bootstrap,
            seed=seed,
            optimal=optimal,
        )
    except (FormatError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_INVALID_INPUT) from None
    for warning in report.warnings:
        typer.echo(f"warning: {warning}", err=True)
    text = json.dumps(report.to_dict(), indent=2)
    if output is None:
        sys.stdout.write(text + "\n")
    else:
        output.write_text(text + "\n", encoding="utf-8")
