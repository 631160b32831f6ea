"""`midog-eval archive`: check a model archive the way the server checks an upload, and pack a directory.

Imports worker.archives (stdlib only), typer and the standard library: never torch, because checking an
archive must not load its model (loading TorchScript runs code). Exit codes: 0 valid, 2 invalid (one line on
stderr naming the problem). docs/model-archive.md documents the format.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from worker.archives import ArchiveError, ArchiveManifest, pack_archive, validate_archive

EXIT_INVALID = 2

app = typer.Typer(
    help="Model archives: check one like an upload, or pack a directory into a zip.", no_args_is_help=True
)


def _summary(manifest: ArchiveManifest) -> str:
    inp, out = manifest.input, manifest.output
    spacing = "as given" if inp.spacing_mm is None else f"{inp.spacing_mm * 1000:.4g} um/px"
    kind = f"heatmap, stride {out.stride}" if out.kind == "heatmap" else out.kind
    return (
        f"{manifest.name or '(unnamed)'}: model {manifest.model}; tiles {inp.tile_size} px, overlap {inp.overlap}, "
        f"spacing {spacing}; output {kind}; threshold {out.threshold:g}; bf16 {'allowed' if manifest.bf16 else 'off'}"
    )


@app.command("check")
def check_command(
    path: Annotated[Path, typer.Argument(help="A .zip model archive or an unpacked archive directory")],
) -> None:
    """Validate an archive without loading its model: size, members, manifest schema, TorchScript container."""
    try:
        manifest = validate_archive(path)
    except ArchiveError as exc:
        print(f"invalid: {exc}", file=sys.stderr)
        raise typer.Exit(EXIT_INVALID) from None
    print(f"valid: {_summary(manifest)}")


@app.command("pack")
def pack_command(
    directory: Annotated[Path, typer.Argument(help="Directory holding manifest.json and the TorchScript file")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The .zip to write")],
) -> None:
    """Zip an archive directory, then check the zip like an upload."""
    if not directory.is_dir():
        print(f"invalid: {directory}: not a directory", file=sys.stderr)
        raise typer.Exit(EXIT_INVALID)
    try:
        manifest = pack_archive(directory, output)
    except ArchiveError as exc:
        output.unlink(missing_ok=True)
        print(f"invalid: {exc}", file=sys.stderr)
        raise typer.Exit(EXIT_INVALID) from None
    print(f"wrote {output} ({output.stat().st_size} bytes): {_summary(manifest)}")
