"""Model archives: the manifest schema and the upload checks that run without loading the model.

Pure stdlib: must not import torch, numpy, app, celery, sqlalchemy or fastapi, because the API validates
uploads here and the sandboxed runtime (worker.inference) reads the same manifest. The model file itself
executes code when loaded, so nothing in this package ever deserialises it.
Submodules: `manifest` (schema of detector and classifier manifests, parsing with one-line errors),
`validate` (zip/directory pre-scan, safe extraction, the TorchScript container check).
"""

from worker.archives.manifest import (
    MANIFEST_NAME,
    AnyManifest,
    ArchiveError,
    ArchiveManifest,
    ClassifierManifest,
    check_task,
    describe_manifest,
    parse_manifest,
)
from worker.archives.validate import ArchiveLimits, extract_archive, pack_archive, validate_archive

__all__ = [
    "MANIFEST_NAME",
    "AnyManifest",
    "ArchiveError",
    "ArchiveLimits",
    "ArchiveManifest",
    "ClassifierManifest",
    "check_task",
    "describe_manifest",
    "extract_archive",
    "pack_archive",
    "parse_manifest",
    "validate_archive",
]
