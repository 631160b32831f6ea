"""Classifier manifests (`"task": "classification"`, MIDOG 2025 Track 2): defaults, round trip, one-line errors
naming the field, the task check of uploads and runs, and a classifier archive checked like any upload."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from worker.archives import (
    ArchiveError,
    ArchiveManifest,
    ClassifierManifest,
    check_task,
    describe_manifest,
    parse_manifest,
    validate_archive,
)

CLASSIFIER: dict[str, Any] = {
    "format_version": 1,
    "task": "classification",
    "name": "atypical",
    "model": "model.pt",
    "input": {"patch_size": 64},
    "output": {"kind": "binary", "activation": "sigmoid"},
}
DETECTOR: dict[str, Any] = {
    "format_version": 1,
    "model": "model.pt",
    "input": {"tile_size": 256, "overlap": 32, "spacing_mm": None},
    "output": {"kind": "points", "threshold": 0.5, "nms_radius_px": 8},
}


def _with(path: str, value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(CLASSIFIER)
    *parents, last = path.split(".")
    node = doc
    for p in parents:
        node = node[p]
    if value is None:
        del node[last]
    else:
        node[last] = value
    return doc


def test_defaults_of_a_minimal_classifier_manifest() -> None:
    manifest = parse_manifest(CLASSIFIER)
    assert isinstance(manifest, ClassifierManifest)
    assert manifest.task == "classification"
    assert (manifest.input.patch_size, manifest.input.fit, manifest.input.input_range) == (64, "crop", "0-1")
    assert manifest.input.mean is None
    assert manifest.input.std is None
    assert (manifest.output.kind, manifest.output.activation, manifest.output.threshold) == ("binary", "sigmoid", 0.5)
    assert (manifest.bf16, manifest.batch_size) == (False, None)


def test_a_full_classifier_manifest_round_trips() -> None:
    doc = {
        **CLASSIFIER,
        "input": {
            "patch_size": 128,
            "fit": "resize",
            "input_range": "0-255",
            "normalisation": {"mean": [180, 120, 170], "std": [40, 40, 30]},
        },
        "output": {"kind": "two-class", "activation": "softmax", "threshold": 0.35},
        "bf16": True,
        "batch_size": 256,
    }
    manifest = parse_manifest(doc)
    assert isinstance(manifest, ClassifierManifest)
    assert manifest.input.std == (40.0, 40.0, 30.0)
    again = parse_manifest(json.loads(manifest.dumps()))
    assert again == manifest
    assert json.loads(manifest.dumps())["task"] == "classification"


def test_detector_manifests_stay_as_they_were() -> None:
    detector = parse_manifest(DETECTOR)
    assert isinstance(detector, ArchiveManifest)
    assert detector.task == "detection"
    assert parse_manifest({**DETECTOR, "task": "detection"}) == detector
    assert "task" not in json.loads(detector.dumps())  # written exactly as before tasks existed


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("task", "segmentation", "task: must be one of 'detection', 'classification', got \"segmentation\""),
        ("input.patch_size", None, "input.patch_size: is required"),
        ("input.patch_size", 8, "input.patch_size: must be an integer in [16, 1024], got 8"),
        ("input.patch_size", 64.0, "input.patch_size: must be an integer in [16, 1024], got 64.0"),
        ("input.fit", "pad", "input.fit: must be one of 'crop', 'resize', got \"pad\""),
        ("input.tile_size", 512, "input.tile_size: is not a known field"),
        ("input.normalisation", {"mean": [1, 2, 3], "std": [1, 0, 1]}, "input.normalisation.std: must be a list of 3"),
        ("output.kind", "multi", "output.kind: must be one of 'binary', 'two-class', got \"multi\""),
        ("output.activation", None, "output.activation: is required"),
        (
            "output.activation",
            "softmax",
            "output.activation: must be one of 'sigmoid', 'none' for output.kind 'binary', got \"softmax\"",
        ),
        ("output.threshold", 1.5, "output.threshold: must be a number in [0, 1], got 1.5"),
        ("output.stride", 4, "output.stride: is not a known field"),
        ("batch_size", 0, "batch_size: must be an integer in [1, 4096], got 0"),
        ("spacing_mm", 0.00025, "spacing_mm: is not a known field"),
    ],
)
def test_each_classifier_schema_violation_is_one_line_naming_the_field(field: str, value: Any, message: str) -> None:
    with pytest.raises(ArchiveError) as info:
        parse_manifest(_with(field, value))
    text = str(info.value)
    assert text.startswith("manifest.json: ")
    assert message in text
    assert "\n" not in text


def test_two_class_outputs_take_softmax_or_probabilities() -> None:
    doc = _with("output", {"kind": "two-class", "activation": "sigmoid"})
    with pytest.raises(ArchiveError, match="output.activation: must be one of 'softmax', 'none' for output.kind"):
        parse_manifest(doc)
    doc["output"]["activation"] = "none"
    assert parse_manifest(doc).output.activation == "none"  # type: ignore[union-attr]


def test_the_task_check_names_manifest_json_task() -> None:
    classifier, detector = parse_manifest(CLASSIFIER), parse_manifest(DETECTOR)
    check_task(classifier, "classification")
    check_task(detector, "detection")
    with pytest.raises(ArchiveError) as wrong:
        check_task(detector, "classification")
    assert str(wrong.value) == (
        "manifest.json: task: the archive is a detection model, but a classification phase needs a classifier "
        '(manifest "task": "classification")'
    )
    with pytest.raises(ArchiveError, match=r"^manifest.json: task: the archive is a classification model, but a "):
        check_task(classifier, "detection")


def test_a_classifier_archive_passes_the_upload_checks_and_the_command_line(tmp_path: Path) -> None:
    import torch

    from app.cli import cli
    from worker.reference.export import write_archive

    manifest = parse_manifest(CLASSIFIER)
    assert isinstance(manifest, ClassifierManifest)
    root = write_archive(tmp_path / "cls", torch.nn.Flatten(), manifest)
    assert validate_archive(root) == manifest
    assert describe_manifest(manifest) == (
        "atypical: classifier, model model.pt; patches 64 px (crop); output binary (sigmoid); threshold 0.5; bf16 off"
    )
    result = CliRunner().invoke(cli, ["archive", "check", str(root)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"valid: {describe_manifest(manifest)}"
