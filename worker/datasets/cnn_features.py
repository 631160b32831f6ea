"""Where the domain report finds the reference CNN whose features it measures, and whether it can: the
committed archive under worker/reference/archives (nothing is downloaded) and torch, the inference runtime's.
The features themselves are computed by worker.inference.tile_features (torch stays out of this package)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REFERENCE_CNN = Path(__file__).resolve().parents[1] / "reference" / "archives" / "cnn"


def available(archive: Path = REFERENCE_CNN) -> bool:
    """Whether torch is installed and the archive is present."""
    return importlib.util.find_spec("torch") is not None and (archive / "manifest.json").is_file()
