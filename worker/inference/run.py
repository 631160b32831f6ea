"""`python -m worker.inference.run`: the runtime's command line, run inside the sandbox.

    python -m worker.inference.run --archive DIR|ZIP --images DIR|manifest.json --output DIR
        [--device auto|cuda|cpu] [--cache DIR] [--batch-size N] [--loaders N] [--no-bf16] [--stats FILE]

Reads the archive and the images read-only and writes one <output>/<stem>.json per case. The archive's
manifest picks the path: a detector writes grand-challenge "Multiple points" (mm) per image; a classifier
(`"task": "classification"`) reads every page of each stack (a classification test set's manifest, only
its listed cases, or a directory of stack TIFFs) and writes the MIDOG 2025 Track 2 list per stack
(`--batch-size` is then patches per forward pass; `--cache` is not used). A zip archive is extracted (with
the upload checks) into a temporary folder. `--device cuda` on a host without a GPU falls back to the CPU
with a warning. Exit status 0 on success, 2 with one line on stderr when the archive, the inputs (e.g. a
test set of the other task) or the model output are invalid.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import torch

from worker.archives import ArchiveError, ClassifierManifest, extract_archive, validate_archive
from worker.inference.classifier import Classifier, run_classifier
from worker.inference.detector import Detector, ModelOutputError
from worker.inference.images import InputError, list_images
from worker.inference.pipeline import run_archive
from worker.inference.stacks import input_task, list_stacks
from worker.vocabulary import CLASSIFICATION


def pick_device(requested: str) -> torch.device:
    if requested == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if requested == "cuda":
        print("warning: no CUDA device available, running on the CPU", file=sys.stderr)
    return torch.device("cpu")


def default_loaders(cpus: int | None = None) -> int:
    """One loader per CPU granted (the sandbox's runner passes `--loaders`; else the affinity mask), 2 to 8:
    more buys nothing once decoding outpaces the device, and each holds an image in memory."""
    return min(8, max(2, len(os.sched_getaffinity(0)) if cpus is None else cpus))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m worker.inference.run", description=__doc__.split("\n")[0])
    p.add_argument("--archive", type=Path, required=True, help="model archive: directory or .zip")
    p.add_argument("--images", type=Path, required=True, help="test-set dir/manifest.json, or a dir of TIFFs")
    p.add_argument("--output", type=Path, required=True, help="directory for <stem>.json result files")
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    p.add_argument("--cache", type=Path, default=None, help="decoded-image cache directory (read-only)")
    p.add_argument("--batch-size", type=int, default=None, help="tiles (classifiers: patches) per forward pass")
    p.add_argument(
        "--loaders", type=int, default=None, help="image decoding threads (default: the CPUs granted, 2 to 8)"
    )
    p.add_argument("--no-bf16", action="store_true", help="run in float32 even if the archive allows bf16")
    p.add_argument("--stats", type=Path, default=None, help="write timing figures as JSON here")
    p.add_argument(
        "--features", type=Path, default=None, help="detectors declaring features: <stem>.json per case goes here"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    device = pick_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    figures: dict[str, object]
    try:
        with tempfile.TemporaryDirectory(prefix="archive-") as tmp:
            archive: Path = args.archive
            if archive.is_file():
                archive = extract_archive(archive, Path(tmp) / "archive")
            manifest = validate_archive(archive)
            loaders = args.loaders or default_loaders()
            if isinstance(manifest, ClassifierManifest):
                stacks = list_stacks(args.images)
                classifier = Classifier(
                    archive, device=device, batch_size=args.batch_size, allow_bf16=not args.no_bf16, manifest=manifest
                )
                done = run_classifier(classifier, stacks, args.output, loaders=loaders)
                figures = {"task": CLASSIFICATION, **asdict(done), "patches_per_second": done.patches_per_second}
            else:
                if input_task(args.images) == CLASSIFICATION:
                    raise InputError(
                        "the input is a classification test set (stacks of patches), but the archive is a "
                        'detector: a classifier\'s manifest has "task": "classification"'
                    )
                specs = list_images(args.images)
                detector = Detector(
                    archive, device=device, batch_size=args.batch_size, allow_bf16=not args.no_bf16, manifest=manifest
                )
                stats = run_archive(
                    detector, specs, args.output, cache_dir=args.cache, loaders=loaders, features_output=args.features
                )
                figures = {**asdict(stats), "tiles_per_second": stats.tiles_per_second}
    except (ArchiveError, InputError, ModelOutputError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.stats is not None:
        args.stats.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
