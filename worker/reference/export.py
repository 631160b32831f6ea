"""Writing a torch module as a model archive directory (or zip): TorchScript file plus manifest.json, for a
detector (ArchiveManifest) or a classifier (ClassifierManifest)."""

from __future__ import annotations

from pathlib import Path

import torch

from worker.archives import MANIFEST_NAME, AnyManifest, ClassifierManifest, pack_archive, validate_archive


def write_archive(out_dir: Path, module: torch.nn.Module, manifest: AnyManifest, *, trace: bool = False) -> Path:
    """Script (or trace, for modules that do not script, on one tile or patch of the manifest's size) `module`
    in eval mode, save it as manifest.model next to manifest.json in `out_dir`, and validate the result with
    the upload checks."""
    out_dir.mkdir(parents=True, exist_ok=True)
    module = module.eval()
    if trace:
        size = manifest.input.patch_size if isinstance(manifest, ClassifierManifest) else manifest.input.tile_size
        scripted = torch.jit.trace(module, torch.zeros(1, 3, size, size))  # type: ignore[no-untyped-call]
    else:
        scripted = torch.jit.script(module)
    torch.jit.save(scripted, str(out_dir / manifest.model))
    (out_dir / MANIFEST_NAME).write_text(manifest.dumps(), encoding="utf-8")
    validate_archive(out_dir)
    return out_dir


def zip_archive(archive_dir: Path, zip_path: Path) -> Path:
    """Pack an archive directory into a zip with manifest.json at the top level (checked like an upload)."""
    pack_archive(archive_dir, zip_path)
    return zip_path
