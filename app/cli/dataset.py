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
    """Summarise a test set: cases, scanners, mitotic figures (and hard negatives) per scanner."""
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
    has_neg = any(r.hard_negatives is not None for r in rows)
    out = [
        f"test set {test_set.manifest.name or test_set.root.name}: {len(test_set.cases)} cases, "
        f"{len(rows)} scanners, {total_mf} mitotic figures",
    ]
    header = f"{'scanner':<24} {'cases':>6} {'mitotic figures':>16}"
    if has_neg:
        header += f" {'hard negatives':>15}"
    header += f" {'um/px':>13}  size"
    out.append(header)
    for r in rows:
        line = f"{r.scanner:<24} {r.cases:>6} {r.mitotic_figures:>16}"
        if has_neg:
            line += f" {'-' if r.hard_negatives is None else r.hard_negatives:>15}"
        if r.spacing_mm is None:
            spacing = "?"
        elif abs(r.spacing_mm[0] - r.spacing_mm[1]) < 1e-12:
            spacing = f"{r.spacing_mm[0] * 1000:.4f}"
        else:
            spacing = f"{r.spacing_mm[0] * 1000:.4f}-{r.spacing_mm[1] * 1000:.4f}"
        sizes = ", ".join(r.sizes) if len(r.sizes) <= 2 else f"{len(r.sizes)} sizes, e.g. {r.sizes[0]}"
        line += f" {spacing:>13}  {sizes}"
        out.append(line)
    sys.stdout.write("\n".join(out) + "\n")


@dataset_app.command("import")
def import_command(
    out: Annotated[Path, typer.Option("--out", help="Directory to write the test set into")],
    midog_json: Annotated[
        Path | None,
        typer.Option("--midog-json", help="MIDOG.json / MIDOG++.json (pixel boxes; category 2 is not scored)"),
    ] = None,
    ground_truth: Annotated[
        Path | None,
        typer.Option("--ground-truth", help="Official evaluation ground truth (mm; 2022 or 2025 variant)"),
    ] = None,
    images: Annotated[
        Path | None, typer.Option("--images", help="Folder holding the images named in the annotations")
    ] = None,
    annotations_only: Annotated[
        bool,
        typer.Option("--annotations-only", help="No images: ground truth and manifest only (needs --spacing-mm)"),
    ] = False,
    scanner_map: Annotated[
        list[str] | None,
        typer.Option(
            "--scanner-map",
            help="Case -> scanner: preset 'midog2021', a CSV 'image,scanner', or MIDOG++ datasets_xvalidation.csv;"
            " repeatable, later maps override earlier ones",
        ),
    ] = None,
    default_scanner: Annotated[
        str | None, typer.Option("--default-scanner", help="Scanner label for cases no map names")
    ] = None,
    spacing_mm: Annotated[
        float | None,
        typer.Option("--spacing-mm", min=1e-9, help="Pixel spacing in mm/px (default: the TIFF resolution tags)"),
    ] = None,
    link: Annotated[str, typer.Option("--link", help="copy, hardlink (copy across file systems) or symlink")] = "copy",
    skip_unannotated: Annotated[
        bool, typer.Option("--skip-unannotated", help="Leave out MIDOG.json images that have no annotation at all")
    ] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Write into a non-empty directory")] = False,
) -> None:
    """Import real MIDOG data (annotations + TIFF images + case -> scanner map) as a test set."""
    from worker.datasets.errors import DatasetError
    from worker.datasets.midog import (
        ImportOptions,
        LinkMode,
        import_midog_json,
        import_official_ground_truth,
        load_midog_json,
        load_scanner_map,
        unannotated,
    )

    if (midog_json is None) == (ground_truth is None):
        raise _fail("give exactly one of --midog-json and --ground-truth")
    if (images is None) == (not annotations_only):
        raise _fail("give --images DIR, or --annotations-only to import the annotations alone")
    if images is not None and not images.is_dir():
        raise _fail(f"{images}: not a directory")
    try:
        link_mode = LinkMode(link)
    except ValueError:
        raise _fail(f"--link: expected one of {', '.join(m.value for m in LinkMode)}") from None
    _check_out_dir(out, overwrite)
    try:
        options = ImportOptions(
            images_dir=images,
            scanner_maps=tuple(load_scanner_map(spec) for spec in scanner_map or []),
            default_scanner=default_scanner,
            spacing_mm=spacing_mm,
            link=link_mode,
            skip_unannotated=skip_unannotated,
        )
        if midog_json is not None:
            if not skip_unannotated:
                empty = unannotated(load_midog_json(midog_json).images)
                if empty:
                    typer.echo(
                        f"warning: {len(empty)} images have no annotation at all (e.g. {empty[0]}); they are "
                        "imported as cases without mitotic figures (--skip-unannotated leaves them out)",
                        err=True,
                    )
            test_set = import_midog_json(out, midog_json, options)
        else:
            assert ground_truth is not None
            test_set = import_official_ground_truth(out, ground_truth, options)
    except DatasetError as exc:
        raise _fail(str(exc)) from None
    _print_summary(test_set)
    typer.echo(f"wrote {len(test_set.cases)} cases to {out}")


@dataset_app.command("cache")
def cache_command(
    directory: Annotated[Path, typer.Argument(help="A test-set directory (with manifest.json)")],
    cache_dir: Annotated[Path, typer.Option("--cache-dir", help="The decoded-image cache directory")],
) -> None:
    """Decode every image of a test set into the decoded-image cache (each once; later runs map it)."""
    from worker.datasets.cache import DecodedImageCache
    from worker.datasets.errors import DatasetError
    from worker.datasets.manifest import TestSet

    start = time.perf_counter()
    try:
        test_set = TestSet.open(directory)
        decoded = DecodedImageCache(cache_dir).warm(test_set)
    except DatasetError as exc:
        raise _fail(str(exc)) from None
    typer.echo(
        f"{decoded} decoded, {len(test_set.cases) - decoded} already cached, in {time.perf_counter() - start:.1f} s"
    )
