"""`midog-eval archive`: check a model archive (a detector or a classifier) the way the server checks an upload,
and pack a directory.

Imports worker.archives (stdlib only), typer and the standard library: never torch, because checking an
archive must not load its model (loading TorchScript runs code). Exit codes: 0 valid, 2 invalid (one line on
stderr naming the problem). docs/model-archive.md documents the format.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from worker.archives import ArchiveError, describe_manifest, pack_archive, validate_archive

EXIT_INVALID = 2

app = typer.Typer(
    help="Model archives: check one like an upload, or pack a directory into a zip.", no_args_is_help=True
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
    print(f"valid: {describe_manifest(manifest)}")


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
    print(f"wrote {output} ({output.stat().st_size} bytes): {describe_manifest(manifest)}")
