"""`midog-eval dataset ...`: build and inspect test sets (synthetic, imported from MIDOG data) .

Imports typer and the standard library at module level; worker.datasets (numpy, scipy, tifffile, Pillow) is
imported inside the commands. Never imports the web service, the worker queue or torch.
Exit codes: 0 success, 2 invalid input (one line on stderr naming the file and the field).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from worker.datasets.manifest import TestSet

EXIT_INVALID_INPUT = 2

dataset_app = typer.Typer(
    name="dataset",
    help="Build and inspect test sets: synthetic multi-scanner sets and imports of MIDOG-format data.",
    no_args_is_help=True,
)


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=EXIT_INVALID_INPUT)


def _parse_size(text: str) -> tuple[int, int]:
    parts = text.lower().replace("×", "x").split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise typer.BadParameter("expected WIDTHxHEIGHT in pixels, e.g. 2048x1536")
    width, height = int(parts[0]), int(parts[1])
    if width < 64 or height < 64:
        raise typer.BadParameter("width and height must be at least 64 pixels")
    return width, height


def _check_out_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise _fail(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise _fail(f"{out}: directory is not empty (use --overwrite to write into it)")


@dataset_app.command("synth")
def synth_command(
    out: Annotated[Path, typer.Option("--out", help="Directory to write the test set into")],
    scanners: Annotated[int, typer.Option("--scanners", min=1, max=64, help="Number of scanners")] = 4,
    cases_per_scanner: Annotated[
        int, typer.Option("--cases-per-scanner", min=1, max=10_000, help="Cases (images) per scanner")
    ] = 5,
    size: Annotated[str, typer.Option("--size", help="Image size WIDTHxHEIGHT in pixels")] = "2048x1536",
    seed: Annotated[int, typer.Option("--seed", min=0, help="Seed: same seed, same bytes")] = 0,
    preview: Annotated[bool, typer.Option("--preview", help="Also write preview.png (one tile per scanner)")] = False,
    workers: Annotated[int, typer.Option("--workers", min=0, help="Rendering processes (0: one per CPU core)")] = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Write into a non-empty directory")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar and no summary")] = False,
) -> None:
    """Write a synthetic H&E test set whose scanners differ in colour, contrast, sharpness, noise,
    compression and pixel spacing."""
    from worker.datasets.synth import generate_test_set

    width, height = _parse_size(size)
    _check_out_dir(out, overwrite)
    n_workers = workers or min(os.cpu_count() or 1, scanners * cases_per_scanner)
    start = time.perf_counter()
    if quiet:
        test_set = generate_test_set(
            out,
            scanners=scanners,
            cases_per_scanner=cases_per_scanner,
            size=(width, height),
            seed=seed,
            preview=preview,
            workers=n_workers,
        )
    else:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        console = Console(stderr=True)
        with Progress(
            TextColumn("rendering"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        ) as bar:
            task = bar.add_task("cases", total=scanners * cases_per_scanner)

            def report(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            test_set = generate_test_set(
                out,
                scanners=scanners,
                cases_per_scanner=cases_per_scanner,
                size=(width, height),
                seed=seed,
                preview=preview,
                progress=report,
                workers=n_workers,
            )
    elapsed = time.perf_counter() - start
    if not quiet:
        _print_summary(test_set)
        typer.echo(f"wrote {len(test_set.cases)} cases to {out} in {elapsed:.1f} s ({n_workers} process(es))")
        if preview:
            typer.echo(f"preview: {test_set.preview_path}")


@dataset_app.command("info")
def info_command(
    directory: Annotated[Path, typer.Argument(help="A test-set directory (with manifest.json)")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """Summarise a test set: cases, scanners, mitotic figures (and imposters) per scanner."""
    from worker.datasets.errors import DatasetError
    from worker.datasets.manifest import TestSet

    try:
        test_set = TestSet.open(directory)
        if as_json:
            import json
            from dataclasses import asdict

            from worker.datasets.manifest import summarise

            rows = summarise(test_set)
            obj = {
                "name": test_set.manifest.name,
                "cases": len(test_set.cases),
                "scanners": [asdict(r) for r in rows],
                "mitotic_figures": sum(r.mitotic_figures for r in rows),
            }
            typer.echo(json.dumps(obj, indent=1))
            return
        _print_summary(test_set)
    except DatasetError as exc:
        raise _fail(str(exc)) from None


def _print_summary(test_set: TestSet) -> None:
    from worker.datasets.manifest import summarise

    rows = summarise(test_set)
    total_mf = sum(r.mitotic_figures for r in rows)
    has_imp = any(r.imposters is not None for r in rows)
    out = [
        f"test set {test_set.manifest.name or test_set.root.name}: {len(test_set.cases)} cases, "
        f"{len(rows)} scanners, {total_mf} mitotic figures",
    ]
    header = f"{'scanner':<24} {'cases':>6} {'mitotic figures':>16}"
    if has_imp:
        header += f" {'imposters':>10}"
    header += f" {'um/px':>13}  size"
    out.append(header)
    for r in rows:
        line = f"{r.scanner:<24} {r.cases:>6} {r.mitotic_figures:>16}"
        if has_imp:
            line += f" {'-' if r.imposters is None else r.imposters:>10}"
        if r.spacing_mm is None:
            spacing = "?"
        elif abs(r.spacing_mm[0] - r.spacing_mm[1]) < 1e-12:
            spacing = f"{r.spacing_mm[0] * 1000:.4f}"
        else:
            spacing = f"{r.spacing_mm[0] * 1000:.4f}-{r.spacing_mm[1] * 1000:.4f}"
        line += f" {spacing:>13}  {', '.join(r.sizes)}"
        out.append(line)
    sys.stdout.write("\n".join(out) + "\n")
