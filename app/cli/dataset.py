"""`midog-eval dataset ...`: build and inspect test sets (synthetic, imported from MIDOG data): detection sets,
and classification sets (MIDOG 2025 Track 2: stacks of patches of atypical and normal mitotic figures);
docs/test-sets.md describes both. `report` describes how a detection set's scanners differ (scikit-learn).

Imports typer and the standard library at module level; worker.datasets (numpy, scipy, tifffile, Pillow) is
imported inside the commands. Never imports the web service, the worker queue or torch.
Exit codes: 0 success, 2 invalid input (one line on stderr naming the file and the field).
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from worker.vocabulary import CLASSIFICATION, DETECTION, TASKS

if TYPE_CHECKING:
    from worker.datasets.manifest import TestSet
    from worker.datasets.midog import ScannerMap
    from worker.datasets.synth import ScannerProfile

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


def _check_task(task: str | None, *, default: str = DETECTION) -> str:
    if task is None:
        return default
    if task not in TASKS:
        raise _fail(f"--task: expected one of {', '.join(TASKS)}, got {task!r}")
    return task


def _refuse(task: str, given: dict[str, object]) -> None:
    """Options of the other task, given explicitly: refused rather than ignored."""
    wrong = [name for name, value in given.items() if value is not None]
    if wrong:
        raise _fail(f"{', '.join(wrong)}: not an option of --task {task}")


@dataset_app.command("synth")
def synth_command(
    out: Annotated[Path, typer.Option("--out", help="Directory to write the test set into")],
    task: Annotated[
        str | None,
        typer.Option(
            "--task",
            help="detection (images with mitotic figures; default) or classification "
            "(MIDOG 2025 Track 2: stacks of patches of normal and atypical figures)",
        ),
    ] = None,
    scanners: Annotated[int, typer.Option("--scanners", min=1, max=64, help="Number of scanners")] = 4,
    cases_per_scanner: Annotated[
        int | None,
        typer.Option("--cases-per-scanner", min=1, max=10_000, help="detection: cases (images) per scanner [5]"),
    ] = None,
    size: Annotated[
        str | None, typer.Option("--size", help="detection: image size WIDTHxHEIGHT in pixels [2048x1536]")
    ] = None,
    domains: Annotated[
        int | None, typer.Option("--domains", min=1, max=64, help="classification: tumour domains [3]")
    ] = None,
    stacks_per_domain: Annotated[
        int | None,
        typer.Option(
            "--stacks-per-domain", min=1, max=10_000, help="classification: stacks per scanner and domain [4]"
        ),
    ] = None,
    patches: Annotated[
        int | None, typer.Option("--patches", min=1, max=16, help="classification: most patches per stack [16]")
    ] = None,
    patch_size: Annotated[
        int | None, typer.Option("--patch-size", min=32, max=1024, help="classification: patch size in pixels [128]")
    ] = None,
    atypical_fraction: Annotated[
        float | None,
        typer.Option("--atypical-fraction", min=0.0, max=1.0, help="classification: share of atypical figures [0.2]"),
    ] = None,
    shift: Annotated[
        float | None,
        typer.Option(
            "--shift",
            min=0.0,
            max=4.0,
            help="Scanner shift: 0 all scanners alike, 1 the presets [1.0], more exaggerates",
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Seed: same seed, same bytes")] = 0,
    preview: Annotated[bool, typer.Option("--preview", help="Also write preview.png (one tile per scanner)")] = False,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            min=0,
            help="Rendering processes (0: one per CPU core; for classification one per 48 stacks, up to that)",
        ),
    ] = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Write into a non-empty directory")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar and no summary")] = False,
) -> None:
    """Write a synthetic H&E test set whose scanners differ in colour, contrast, sharpness, noise,
    compression and pixel spacing: detection images, or (--task classification) stacks of normal and
    atypical mitotic figures per scanner and tumour domain."""
    task = _check_task(task)
    if task == CLASSIFICATION:
        _refuse(task, {"--cases-per-scanner": cases_per_scanner, "--size": size})
        _synth_classification(
            out,
            scanners=scanners,
            domains=3 if domains is None else domains,
            stacks_per_domain=4 if stacks_per_domain is None else stacks_per_domain,
            patches=16 if patches is None else patches,
            patch_size=128 if patch_size is None else patch_size,
            atypical_fraction=0.2 if atypical_fraction is None else atypical_fraction,
            shift=1.0 if shift is None else shift,
            seed=seed,
            preview=preview,
            workers=workers,
            overwrite=overwrite,
            quiet=quiet,
        )
        return
    _refuse(
        task,
        {
            "--domains": domains,
            "--stacks-per-domain": stacks_per_domain,
            "--patches": patches,
            "--patch-size": patch_size,
            "--atypical-fraction": atypical_fraction,
        },
    )
    from worker.datasets.synth import generate_test_set

    cases_per_scanner = 5 if cases_per_scanner is None else cases_per_scanner
    width, height = _parse_size("2048x1536" if size is None else size)
    _check_out_dir(out, overwrite)
    profiles: int | list[ScannerProfile] = scanners
    if shift is not None and shift != 1.0:  # shift 1 is the presets: the same bytes as without --shift
        from worker.datasets.synth_classification import scanner_profiles

        profiles = scanner_profiles(scanners, shift)
    n_workers = workers or min(os.cpu_count() or 1, scanners * cases_per_scanner)
    start = time.perf_counter()
    with _progress("rendering", scanners * cases_per_scanner, quiet) as report:
        test_set = generate_test_set(
            out,
            scanners=profiles,
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


def _synth_classification(
    out: Path,
    *,
    scanners: int,
    domains: int,
    stacks_per_domain: int,
    patches: int,
    patch_size: int,
    atypical_fraction: float,
    shift: float,
    seed: int,
    preview: bool,
    workers: int,
    overwrite: bool,
    quiet: bool,
) -> None:
    from worker.datasets.synth_classification import generate_classification_set

    _check_out_dir(out, overwrite)
    total = scanners * domains * stacks_per_domain
    # a process costs one to two seconds to start (numpy, scipy, Pillow) and a stack about 0.1 s to render:
    # only worth it for a few dozen stacks each
    n_workers = workers or max(1, min(os.cpu_count() or 1, total // 48))
    start = time.perf_counter()
    with _progress("rendering stacks", total, quiet) as report:
        test_set = generate_classification_set(
            out,
            scanners=scanners,
            domains=domains,
            stacks_per_domain=stacks_per_domain,
            max_patches=patches,
            patch_size=patch_size,
            atypical_fraction=atypical_fraction,
            shift=shift,
            seed=seed,
            preview=preview,
            progress=report,
            workers=n_workers,
        )
    elapsed = time.perf_counter() - start
    if not quiet:
        _print_summary(test_set)
        n_patches = sum(c.patches or 0 for c in test_set.cases)
        typer.echo(
            f"wrote {len(test_set.cases)} stacks ({n_patches} patches) to {out} in {elapsed:.1f} s "
            f"({n_workers} process(es))"
        )
        if preview:
            typer.echo(f"preview: {test_set.preview_path}")


@contextlib.contextmanager
def _progress(what: str, total: int, quiet: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A progress bar on stderr (nothing when quiet): yields the callback the generators call."""
    if quiet:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    with Progress(
        TextColumn(what),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task(what, total=total)

        def report(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield report


@dataset_app.command("info")
def info_command(
    directory: Annotated[Path, typer.Argument(help="A test-set directory (with manifest.json)")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """Summarise a test set: cases, scanners, mitotic figures (and hard negatives) per scanner; for a
    classification set, stacks, patches and the atypical share per scanner and per tumour domain."""
    from worker.datasets.errors import DatasetError
    from worker.datasets.manifest import TestSet

    try:
        test_set = TestSet.open(directory)
        if as_json:
            import json

            typer.echo(json.dumps(_summary_json(test_set), indent=1))
            return
        _print_summary(test_set)
    except DatasetError as exc:
        raise _fail(str(exc)) from None


def _summary_json(test_set: TestSet) -> dict[str, object]:
    from dataclasses import asdict

    from worker.datasets.manifest import CLASSIFICATION, summarise

    if test_set.task == CLASSIFICATION:
        from worker.datasets.stacks import summarise_classification

        return {
            "name": test_set.manifest.name,
            "task": test_set.task,
            **summarise_classification(test_set).to_json(),
        }
    rows = summarise(test_set)
    obj: dict[str, object] = {
        "name": test_set.manifest.name,
        "cases": len(test_set.cases),
        "scanners": [asdict(r) for r in rows],
        "mitotic_figures": sum(r.mitotic_figures for r in rows),
    }
    groups = _detection_groups(test_set)
    if groups:
        obj["groups"] = groups
    return obj


# group keys of detection sets shown by `info` (the MIDOG 2025 ground truth's, and MIDOG.json's tumour type)
_SHOWN_GROUPS = ("tumor domain", "roi type", "tumor type")


def _detection_groups(test_set: TestSet) -> dict[str, list[dict[str, object]]]:
    """Cases and mitotic figures per value of each group key beyond the scanner (tumour domain, roi type)."""
    keys = [k for k in _SHOWN_GROUPS if any(k in c.groups for c in test_set.cases)]
    if not keys:
        return {}
    gt = test_set.ground_truth() if test_set.ground_truth_path.exists() else {}
    out: dict[str, list[dict[str, object]]] = {}
    for key in keys:
        counts: dict[str, list[int]] = {}
        for case in test_set.cases:
            acc = counts.setdefault(case.groups.get(key, "-"), [0, 0])
            acc[0] += 1
            acc[1] += len(gt.get(case.name, []))
        ordered = sorted(counts, key=lambda v: (not v.isdigit(), len(v) if v.isdigit() else 0, v))
        out[key] = [{"value": v, "cases": counts[v][0], "mitotic_figures": counts[v][1]} for v in ordered]
    return out


def _print_summary(test_set: TestSet) -> None:
    from worker.datasets.manifest import CLASSIFICATION, summarise

    if test_set.task == CLASSIFICATION:
        _print_classification_summary(test_set)
        return
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
        line += f" {_spacing_text(r.spacing_mm):>13}  {_sizes_text(r.sizes)}"
        out.append(line)
    for key, values in _detection_groups(test_set).items():
        if key == "tumor type" and len(values) > 12:
            continue  # MIDOG++ has seven tumour types; a long list of one-offs says little
        parts = [f"{v['value']} ({v['cases']} cases, {v['mitotic_figures']} MF)" for v in values]
        out.append(f"{key}: " + ", ".join(parts))
    sys.stdout.write("\n".join(out) + "\n")


def _spacing_text(spacing_mm: tuple[float, float] | None) -> str:
    if spacing_mm is None:
        return "?"
    if abs(spacing_mm[0] - spacing_mm[1]) < 1e-12:
        return f"{spacing_mm[0] * 1000:.4f}"
    return f"{spacing_mm[0] * 1000:.4f}-{spacing_mm[1] * 1000:.4f}"


def _sizes_text(sizes: tuple[str, ...]) -> str:
    return ", ".join(sizes) if len(sizes) <= 2 else f"{len(sizes)} sizes, e.g. {sizes[0]}"


def _print_classification_summary(test_set: TestSet) -> None:
    from worker.datasets.stacks import summarise_classification

    summary = summarise_classification(test_set)

    def share(atypical: int | None, patches: int) -> str:
        if atypical is None:
            return "?"
        return f"{100.0 * atypical / patches:.1f}%" if patches else "-"

    name = test_set.manifest.name or test_set.root.name
    atypical = "?" if summary.atypical is None else str(summary.atypical)
    out = [
        f"test set {name} (classification): {summary.stacks} stacks, {summary.patches} patches, "
        f"{len(summary.scanners)} scanners, {len(summary.domains)} tumour domains, {atypical} atypical "
        f"({share(summary.atypical, summary.patches)})",
        f"{'scanner':<24} {'stacks':>6} {'patches':>8} {'atypical':>9} {'share':>7} {'um/px':>13}  patch size",
    ]
    for r in summary.scanners:
        out.append(
            f"{r.label:<24} {r.stacks:>6} {r.patches:>8} {'?' if r.atypical is None else r.atypical:>9} "
            f"{share(r.atypical, r.patches):>7} {_spacing_text(r.spacing_mm):>13}  {_sizes_text(r.sizes)}"
        )
    out.append(f"{'tumour domain':<24} {'stacks':>6} {'patches':>8} {'atypical':>9} {'share':>7}")
    for r in summary.domains:
        out.append(
            f"{r.label:<24} {r.stacks:>6} {r.patches:>8} {'?' if r.atypical is None else r.atypical:>9} "
            f"{share(r.atypical, r.patches):>7}"
        )
    sys.stdout.write("\n".join(out) + "\n")


@dataset_app.command("import")
def import_command(
    out: Annotated[Path, typer.Option("--out", help="Directory to write the test set into")],
    task: Annotated[
        str | None,
        typer.Option(
            "--task",
            help="detection or classification (default: classification for --atypical-csv / --amibr-csv, "
            "detection otherwise)",
        ),
    ] = None,
    midog_json: Annotated[
        Path | None,
        typer.Option("--midog-json", help="MIDOG.json / MIDOG++.json (pixel boxes; category 2 is not scored)"),
    ] = None,
    ground_truth: Annotated[
        Path | None,
        typer.Option(
            "--ground-truth",
            help="Official evaluation ground truth: detection (mm; 2022 or 2025 variant) or, with --task "
            "classification, the Track 2 list (with the stack TIFFs in --images)",
        ),
    ] = None,
    atypical_csv: Annotated[
        Path | None,
        typer.Option("--atypical-csv", help="classification: the MIDOG 2025 atypical CSV (majority AMF / NMF)"),
    ] = None,
    amibr_csv: Annotated[
        Path | None, typer.Option("--amibr-csv", help="classification: the AMi-Br CSV (majority_atypical)")
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
    link: Annotated[
        str | None, typer.Option("--link", help="copy [default], hardlink (copy across file systems) or symlink")
    ] = None,
    skip_unannotated: Annotated[
        bool, typer.Option("--skip-unannotated", help="Leave out MIDOG.json images that have no annotation at all")
    ] = False,
    patch_size: Annotated[
        int | None,
        typer.Option("--patch-size", min=8, max=4096, help="classification CSVs: patch size in pixels [128]"),
    ] = None,
    patches: Annotated[
        int | None, typer.Option("--patches", min=1, max=16, help="classification CSVs: most patches per stack [16]")
    ] = None,
    workers: Annotated[
        int, typer.Option("--workers", min=0, help="classification CSVs: processes cutting images (0: one per core)")
    ] = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Write into a non-empty directory")] = False,
) -> None:
    """Import real MIDOG data as a test set: detection (MIDOG.json or the official ground truth, with TIFF
    images and a case -> scanner map) or classification (the MIDOG 2025 atypical CSV or the AMi-Br CSV with
    the images they name, cut into stacks of patches; or an official Track 2 ground truth with its stacks)."""
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

    sources = {
        "--midog-json": midog_json,
        "--ground-truth": ground_truth,
        "--atypical-csv": atypical_csv,
        "--amibr-csv": amibr_csv,
    }
    if sum(v is not None for v in sources.values()) != 1:
        raise _fail("give exactly one of --midog-json, --ground-truth, --atypical-csv and --amibr-csv")
    csv_source = atypical_csv is not None or amibr_csv is not None
    task = _check_task(task, default=CLASSIFICATION if csv_source else DETECTION)
    if task == DETECTION and csv_source:
        raise _fail("--atypical-csv / --amibr-csv label figures as atypical or normal: use --task classification")
    if task == CLASSIFICATION and midog_json is not None:
        raise _fail("--midog-json is a detection source: use --task detection (or --atypical-csv / --amibr-csv)")
    if task == CLASSIFICATION:
        _refuse(task, {"--annotations-only": annotations_only or None, "--skip-unannotated": skip_unannotated or None})
        if not csv_source:
            _refuse("classification --ground-truth", {"--patch-size": patch_size, "--patches": patches})
        elif link is not None:
            raise _fail("--link: the patches are cut from the images, nothing is linked")
    else:
        _refuse(task, {"--patch-size": patch_size, "--patches": patches})
    if (images is None) == (not annotations_only):
        raise _fail("give --images DIR, or --annotations-only to import the annotations alone")
    if images is not None and not images.is_dir():
        raise _fail(f"{images}: not a directory")
    try:
        link_mode = LinkMode(link or "copy")
    except ValueError:
        raise _fail(f"--link: expected one of {', '.join(m.value for m in LinkMode)}") from None
    _check_out_dir(out, overwrite)
    try:
        scanner_maps = tuple(load_scanner_map(spec) for spec in scanner_map or [])
        if csv_source:
            assert images is not None
            test_set = _import_figures(
                out,
                atypical_csv=atypical_csv,
                amibr_csv=amibr_csv,
                images=images,
                scanner_maps=scanner_maps,
                default_scanner=default_scanner,
                spacing_mm=spacing_mm,
                patch_size=128 if patch_size is None else patch_size,
                patches=16 if patches is None else patches,
                workers=workers,
            )
        else:
            options = ImportOptions(
                images_dir=images,
                scanner_maps=scanner_maps,
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
            elif task == CLASSIFICATION:
                from worker.datasets.atypical import import_track2_ground_truth

                assert ground_truth is not None
                test_set = import_track2_ground_truth(out, ground_truth, options)
            else:
                assert ground_truth is not None
                test_set = import_official_ground_truth(out, ground_truth, options)
    except DatasetError as exc:
        raise _fail(str(exc)) from None
    _print_summary(test_set)
    if test_set.task == CLASSIFICATION:
        n_patches = sum(c.patches or 0 for c in test_set.cases)
        typer.echo(f"wrote {len(test_set.cases)} stacks ({n_patches} patches) to {out}")
    else:
        typer.echo(f"wrote {len(test_set.cases)} cases to {out}")


def _import_figures(
    out: Path,
    *,
    atypical_csv: Path | None,
    amibr_csv: Path | None,
    images: Path,
    scanner_maps: tuple[ScannerMap, ...],
    default_scanner: str | None,
    spacing_mm: float | None,
    patch_size: int,
    patches: int,
    workers: int,
) -> TestSet:
    from worker.datasets.atypical import FigureImportOptions, import_figures, read_amibr_csv, read_midog25_csv

    if atypical_csv is not None:
        table = read_midog25_csv(atypical_csv)
    else:
        assert amibr_csv is not None
        table = read_amibr_csv(amibr_csv)
    n_images = len({(f.image, f.dataset) for f in table.figures})
    options = FigureImportOptions(
        images_dir=images,
        patch_size=patch_size,
        max_patches=patches,
        scanner_maps=scanner_maps,
        default_scanner=default_scanner,
        spacing_mm=spacing_mm,
        workers=workers or max(1, min(os.cpu_count() or 1, n_images // 4)),
    )
    return import_figures(out, table, options)


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


def _reference_cnn() -> tuple[str, Any]:
    """The committed reference CNN's penultimate features (the inference runtime, imported only when used)."""
    from worker.datasets.cnn_features import REFERENCE_CNN
    from worker.inference.tile_features import penultimate_features

    return REFERENCE_CNN.name, functools.partial(penultimate_features, archive=REFERENCE_CNN)


@dataset_app.command("report")
def report_command(
    directory: Annotated[Path, typer.Argument(help="A detection test set (with manifest.json)")],
    out: Annotated[Path, typer.Option("--out", help="Directory to write the report into")],
    tiles_per_image: Annotated[
        int, typer.Option("--tiles-per-image", min=1, max=10_000, help="Most tiles drawn from each image")
    ] = 32,
    tile_size: Annotated[int, typer.Option("--tile-size", min=16, max=4096, help="Tile size in pixels")] = 128,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Seed of the tile draw, t-SNE and the folds")] = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Write into a non-empty directory")] = False,
    cnn: Annotated[
        bool | None,
        typer.Option(
            "--cnn/--no-cnn",
            help="Also measure the gap on the reference CNN's penultimate features (default: when torch is installed)",
        ),
    ] = None,
) -> None:
    """The domain report: how the scanners of a detection test set differ (Macenko stain vectors, optical
    density, H and E concentrations, sharpness, resolution), a t-SNE of tile features coloured by scanner, and
    the domain-gap number: a scanner classifier's cross-validated balanced accuracy beside chance. Writes
    report.json, features.csv, per_scanner.csv, embedding.svg and index.html; progress on stderr."""
    from worker.datasets import cnn_features
    from worker.datasets.domain_report import build_report
    from worker.datasets.errors import DatasetError
    from worker.datasets.manifest import TestSet

    _check_out_dir(out, overwrite)
    if cnn and not cnn_features.available():
        raise _fail("--cnn needs torch (the inference runtime) and worker/reference/archives/cnn")
    with_cnn = cnn_features.available() if cnn is None else cnn
    start = time.perf_counter()
    try:
        test_set = TestSet.open(directory)
        report = build_report(
            test_set,
            out,
            tile_size=tile_size,
            tiles_per_image=tiles_per_image,
            seed=seed,
            learnt=_reference_cnn() if with_cnn else None,
            progress=lambda line: typer.echo(line, err=True),
        )
    except DatasetError as exc:
        raise _fail(str(exc)) from None
    gap = report["domain_gap"]
    if gap["balanced_accuracy"] is None:
        typer.echo(f"domain gap: not measured ({gap['note']})")
    else:
        typer.echo(
            f"domain gap: scanner classifier balanced accuracy {gap['balanced_accuracy']:.3f} "
            f"(chance {gap['chance']:.3f}, {gap['scanners']} scanners, {report['tiles']} tiles)"
        )
    learnt = report.get("domain_gap_cnn")
    if learnt and learnt["balanced_accuracy"] is not None:
        typer.echo(f"on the reference CNN's features: balanced accuracy {learnt['balanced_accuracy']:.3f}")
    typer.echo(f"wrote {out / 'index.html'} in {time.perf_counter() - start:.1f} s")
