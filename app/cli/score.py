"""`midog-eval score`: scores a predictions file against a ground truth with the official MIDOG rules.

Two tasks:
- detection (default): precision, recall, F1 and AP per case, per group and overall; under --rules midog2025 the
  readers apply the official 2025 validation and `aggregates` carries every official MIDOG 2025 Track 1 key,
  FROC included (an undefined FROC score is written as null);
- classification (MIDOG 2025 Track 2): the official ground-truth list and per-stack outputs; `aggregates`
  carries the official keys (`overall_<metric>`, `domain_<k>`).

The options are parsed with argparse, and `main` is called before typer is imported (app.cli.main), because a
user runs `score` in loops: typer and its pydantic adapters cost a quarter of a second of start-up. Imports
only the scoring core and the standard library (no web service, no worker, no torch).
Exit codes: 0 success, 2 invalid input (one line on stderr naming the problem).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from worker.evaluation.errors import FormatError
from worker.evaluation.io import read_json
from worker.evaluation.types import DEFAULT_RADIUS_MM, MissingCases, Rules
from worker.vocabulary import CLASSIFICATION, DETECTION

EXIT_INVALID_INPUT = 2
HELP = "Score predictions per case, per group and overall (detection: precision, recall, F1, AP, FROC under "
HELP += "midog2025; classification: MIDOG 2025 Track 2 metrics)."


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="midog-eval score", description=HELP)
    p.add_argument(
        "--task",
        choices=(DETECTION, CLASSIFICATION),
        default=DETECTION,
        help="detection (Track 1 and earlier editions) or classification (MIDOG 2025 Track 2)",
    )
    p.add_argument(
        "--ground-truth",
        type=Path,
        required=True,
        help="detection: official 2022/2025 ground truth, or MIDOG.json with --spacing-mm; classification: the "
        'official list [{"image", "labels", "tumordomains"}]',
    )
    p.add_argument(
        "--predictions",
        type=Path,
        required=True,
        help="a JSON object keyed by image (detection: Multiple points; classification: the list of "
        "{class, confidence} per stack), a directory of <stem>.json, or a CSV (classification: "
        "image,index,class,confidence)",
    )
    p.add_argument("--groups", type=Path, help="JSON object or CSV (image,group): scanner/domain per image")
    p.add_argument(
        "--rules",
        choices=[r.value for r in Rules],
        default=Rules.MIDOG2022.value,
        help="which official detection evaluation to reproduce (default midog2022)",
    )
    p.add_argument(
        "--missing-cases",
        choices=[m.value for m in MissingCases],
        default=MissingCases.ERROR.value,
        help="error: reject; fn: score as misses; skip: leave out (official)",
    )
    p.add_argument("--radius-mm", type=float, default=DEFAULT_RADIUS_MM, help="hit radius in mm (inclusive)")
    p.add_argument("--bootstrap", type=_non_negative, default=0, help="bootstrap resamples for 95%% CIs")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    p.add_argument("--csv-units", choices=("mm", "px"), help="units of CSV coordinates when there is no unit column")
    p.add_argument("--spacing-mm", type=float, help="pixel spacing (mm/px) for MIDOG.json or px CSV input")
    p.add_argument("--optimal", action="store_true", help="add counts of an optimal (max-cardinality) matching")
    p.add_argument("--output", type=Path, help="write metrics.json here instead of stdout")
    return p


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


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


def _detection(args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    from worker.evaluation.io import load_ground_truth, read_predictions
    from worker.evaluation.metrics import evaluate

    gt = load_ground_truth(args.ground_truth, spacing_mm=args.spacing_mm, rules=args.rules)
    preds = read_predictions(args.predictions, csv_units=args.csv_units, spacing_mm=args.spacing_mm, rules=args.rules)
    report = evaluate(
        gt,
        preds,
        groups=read_groups(args.groups) if args.groups else None,
        rules=args.rules,
        missing_cases=args.missing_cases,
        radius_mm=args.radius_mm,
        bootstrap=args.bootstrap,
        seed=args.seed,
        optimal=args.optimal,
    )
    return report.to_dict(), list(report.warnings)


def _classification(args: argparse.Namespace) -> dict[str, Any]:
    from worker.evaluation.classification import evaluate_classification, patch_counts, read_ground_truth
    from worker.evaluation.classification import read_predictions as read_stacks

    truth = read_ground_truth(args.ground_truth)
    predictions = read_stacks(args.predictions, patch_counts(truth))
    report = evaluate_classification(truth, predictions, bootstrap=args.bootstrap, seed=args.seed)
    return report.to_dict()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command on `argv` (the arguments after `score`); returns the exit status."""
    args = parser().parse_args(argv)
    warnings: list[str] = []
    try:
        if args.task == CLASSIFICATION:
            if args.groups or args.optimal or args.rules != Rules.MIDOG2022.value:
                raise FormatError(
                    "--groups, --optimal and --rules apply to detection only (tumour domains come "
                    "from the Track 2 ground truth)"
                )
            document = _classification(args)
        else:
            document, warnings = _detection(args)
    except (FormatError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID_INPUT
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    text = json.dumps(document, indent=2)
    if args.output is None:
        sys.stdout.write(text + "\n")
    else:
        args.output.write_text(text + "\n", encoding="utf-8")
    return 0
