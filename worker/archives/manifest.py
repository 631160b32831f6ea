"""The model-archive manifest (manifest.json, format_version 1): schema, parsing and serialisation.

Two tasks share the format: detectors (no `task` key, or `"task": "detection"`: `ArchiveManifest`, tiles in,
heatmap/points/boxes out) and classifiers for MIDOG 2025 Track 2 (`"task": "classification"`:
`ClassifierManifest`, patches in, a score of "atypical" per patch out). `parse_manifest` returns either.
Stdlib only (see the package docstring). Every error is one line naming the field, e.g.
``manifest.json: output.threshold: must be a number in [0, 1], got 1.5``. Unknown keys are errors, so a
misspelt optional key cannot silently fall back to its default. docs/model-archive.md documents the format.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, ClassVar, Literal

from worker.errors import SubmissionError

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
MAX_MANIFEST_BYTES = 64 * 1024

DETECTION = "detection"
CLASSIFICATION = "classification"
TASKS = (DETECTION, CLASSIFICATION)

OutputKind = Literal["heatmap", "points", "boxes"]
InputRange = Literal["0-1", "0-255"]
Activation = Literal["none", "sigmoid"]
# Classifiers: how a patch of another size becomes patch_size x patch_size; what the model returns.
PatchFit = Literal["crop", "resize"]
ClassifierKind = Literal["binary", "two-class"]
ClassifierActivation = Literal["none", "sigmoid", "softmax"]
CLASSIFIER_ACTIVATIONS: dict[str, tuple[str, ...]] = {"binary": ("sigmoid", "none"), "two-class": ("softmax", "none")}


class ArchiveError(SubmissionError, ValueError):
    """The uploaded model archive is invalid; the one-line message is shown to the participant."""


@dataclass(frozen=True)
class InputSpec:
    """How tiles are cut and prepared for the model."""

    tile_size: int
    overlap: int
    spacing_mm: float | None
    input_range: InputRange = "0-1"
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None


@dataclass(frozen=True)
class OutputSpec:
    """What the model returns and how it becomes labelled points."""

    kind: OutputKind
    threshold: float
    nms_radius_px: float
    stride: int = 1
    activation: Activation = "none"
    iou_threshold: float = 0.5
    min_score: float = 0.05


@dataclass(frozen=True)
class ArchiveManifest:
    """A parsed, validated manifest.json."""

    model: str
    input: InputSpec
    output: OutputSpec
    bf16: bool = False
    batch_size: int | None = None
    name: str | None = None
    format_version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict, compare=False)
    # The model's method (or submodule) that maps the same input batch to feature maps (B, C, h, w) or
    # vectors (B, C): the runtime then records each case's features, averaged over its tiles, for the
    # representation-shift analysis (docs/model-archive.md, "Features"). None: no features.
    features_method: str | None = None
    # Not a field: detection manifests are written exactly as before tasks existed (no "task" key).
    task: ClassVar[str] = DETECTION

    def to_dict(self) -> dict[str, Any]:
        """The JSON object that `parse_manifest` reads back to an equal manifest."""
        inp: dict[str, Any] = {
            "tile_size": self.input.tile_size,
            "overlap": self.input.overlap,
            "spacing_mm": self.input.spacing_mm,
            "input_range": self.input.input_range,
            "normalisation": _normalisation_dict(self.input.mean, self.input.std),
        }
        out: dict[str, Any] = {
            "kind": self.output.kind,
            "threshold": self.output.threshold,
            "nms_radius_px": self.output.nms_radius_px,
            "min_score": self.output.min_score,
        }
        if self.output.kind == "heatmap":
            out["stride"] = self.output.stride
            out["activation"] = self.output.activation
        if self.output.kind == "boxes":
            out["iou_threshold"] = self.output.iou_threshold
        doc: dict[str, Any] = {"format_version": self.format_version}
        if self.name is not None:
            doc["name"] = self.name
        doc.update({"model": self.model, "input": inp, "output": out, "bf16": self.bf16})
        if self.batch_size is not None:
            doc["batch_size"] = self.batch_size
        if self.features_method is not None:
            doc["features"] = {"method": self.features_method}
        return doc

    def dumps(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"


@dataclass(frozen=True)
class PatchInputSpec:
    """How the patches of a stack are prepared for a classifier.

    `fit` says what happens to a patch that is not patch_size x patch_size: "crop" cuts (or pads with white,
    255) a patch_size window whose pixel patch_size // 2 is the patch's pixel size // 2 on each axis (the
    figure stays on the centre pixel, no resampling); "resize" resamples it bilinearly to patch_size x
    patch_size (antialiased when shrinking; a non-square patch is stretched)."""

    patch_size: int
    fit: PatchFit = "crop"
    input_range: InputRange = "0-1"
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None


@dataclass(frozen=True)
class ClassifierOutputSpec:
    """What a classifier returns for a batch of N patches, and how it becomes a class.

    kind "binary": a tensor (N,) or (N, 1), the score of "atypical" (activation "sigmoid": logits, "none":
    probabilities); kind "two-class": (N, 2), columns [normal, atypical] (activation "softmax": logits,
    "none": probabilities, column 1 is P(atypical)). A patch is "atypical" when P(atypical) >= threshold."""

    kind: ClassifierKind
    activation: ClassifierActivation
    threshold: float = 0.5


@dataclass(frozen=True)
class ClassifierManifest:
    """A parsed, validated manifest.json of a classifier (`"task": "classification"`)."""

    model: str
    input: PatchInputSpec
    output: ClassifierOutputSpec
    bf16: bool = False
    batch_size: int | None = None
    name: str | None = None
    format_version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict, compare=False)
    task: ClassVar[str] = CLASSIFICATION

    def to_dict(self) -> dict[str, Any]:
        """The JSON object that `parse_manifest` reads back to an equal manifest."""
        doc: dict[str, Any] = {"format_version": self.format_version, "task": CLASSIFICATION}
        if self.name is not None:
            doc["name"] = self.name
        doc["model"] = self.model
        doc["input"] = {
            "patch_size": self.input.patch_size,
            "fit": self.input.fit,
            "input_range": self.input.input_range,
            "normalisation": _normalisation_dict(self.input.mean, self.input.std),
        }
        doc["output"] = {
            "kind": self.output.kind,
            "activation": self.output.activation,
            "threshold": self.output.threshold,
        }
        doc["bf16"] = self.bf16
        if self.batch_size is not None:
            doc["batch_size"] = self.batch_size
        return doc

    def dumps(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"


# What `parse_manifest` and `validate_archive` return: look at `.task` (or isinstance) to tell them apart.
AnyManifest = ArchiveManifest | ClassifierManifest


def describe_manifest(manifest: AnyManifest) -> str:
    """One line summing up an archive's manifest (`midog-eval archive check`)."""
    name = manifest.name or "(unnamed)"
    bf16 = "allowed" if manifest.bf16 else "off"
    if isinstance(manifest, ClassifierManifest):
        inp, cls = manifest.input, manifest.output
        return (
            f"{name}: classifier, model {manifest.model}; patches {inp.patch_size} px ({inp.fit}); "
            f"output {cls.kind} ({cls.activation}); threshold {cls.threshold:g}; bf16 {bf16}"
        )
    inp_d, out = manifest.input, manifest.output
    spacing = "as given" if inp_d.spacing_mm is None else f"{inp_d.spacing_mm * 1000:.4g} um/px"
    kind = f"heatmap, stride {out.stride}" if out.kind == "heatmap" else out.kind
    return (
        f"{name}: model {manifest.model}; tiles {inp_d.tile_size} px, overlap {inp_d.overlap}, "
        f"spacing {spacing}; output {kind}; threshold {out.threshold:g}; bf16 {bf16}"
    )


def check_task(manifest: AnyManifest, task: str, *, source: str = MANIFEST_NAME) -> None:
    """Refuse an archive whose task is not `task` (the phase's): ArchiveError naming manifest.json's task.

    The line holds only values of the closed task vocabulary, so it is safe to show in a hidden phase."""
    if manifest.task == task:
        return
    if task == CLASSIFICATION:
        hint = 'a classification phase needs a classifier (manifest "task": "classification")'
    else:
        hint = f'a {task} phase needs a detector (no manifest "task", or "task": "detection")'
    raise ArchiveError(f"{source}: task: the archive is a {manifest.task} model, but {hint}")


def _normalisation_dict(
    mean: tuple[float, float, float] | None, std: tuple[float, float, float] | None
) -> str | dict[str, list[float]]:
    return "none" if mean is None or std is None else {"mean": list(mean), "std": list(std)}


class _Reader:
    """Typed access to one JSON object with errors that name the dotted field path."""

    def __init__(self, source: str, obj: object, path: str) -> None:
        self.source = source
        self.path = path
        if not isinstance(obj, dict):
            raise self.error(path or "(top level)", f"must be a JSON object, got {_kind(obj)}")
        self.obj: dict[str, Any] = obj
        self.seen: set[str] = set()

    def error(self, name: str, message: str) -> ArchiveError:
        return ArchiveError(f"{self.source}: {name}: {message}")

    def _name(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def has(self, key: str) -> bool:
        return key in self.obj

    def raw(self, key: str, *, required: bool) -> Any:
        self.seen.add(key)
        if key not in self.obj:
            if required:
                raise self.error(self._name(key), "is required")
            return None
        return self.obj[key]

    def integer(self, key: str, *, lo: int, hi: int, required: bool = True, default: int | None = None) -> int:
        value = self.raw(key, required=required)
        if value is None and not required:
            return default  # type: ignore[return-value]
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise self.error(self._name(key), f"must be an integer in [{lo}, {hi}], got {_show(value)}")
        return value

    def number(
        self,
        key: str,
        *,
        lo: float,
        hi: float,
        lo_open: bool = False,
        required: bool = True,
        default: float | None = None,
    ) -> float:
        value = self.raw(key, required=required)
        if value is None and not required:
            return default  # type: ignore[return-value]
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        if ok:
            ok = (lo < value if lo_open else lo <= value) and value <= hi
        if not ok:
            bracket = "(" if lo_open else "["
            raise self.error(self._name(key), f"must be a number in {bracket}{lo:g}, {hi:g}], got {_show(value)}")
        return float(value)

    def choice(self, key: str, options: tuple[str, ...], *, required: bool = True, default: str = "") -> str:
        value = self.raw(key, required=required)
        if value is None and not required:
            return default
        if value not in options:
            raise self.error(self._name(key), f"must be one of {', '.join(map(repr, options))}, got {_show(value)}")
        return str(value)

    def boolean(self, key: str, *, default: bool) -> bool:
        value = self.raw(key, required=False)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.error(self._name(key), f"must be true or false, got {_show(value)}")
        return value

    def triple(self, key: str, *, positive: bool) -> tuple[float, float, float]:
        value = self.raw(key, required=True)
        bad = not isinstance(value, list) or len(value) != 3 or not all(map(_is_number, value))
        if not bad and positive:
            bad = any(v <= 0 for v in value)
        if bad:
            what = "3 positive numbers" if positive else "3 finite numbers"
            raise self.error(self._name(key), f"must be a list of {what} (R, G, B), got {_show(value)}")
        return (float(value[0]), float(value[1]), float(value[2]))

    def child(self, key: str) -> _Reader:
        return _Reader(self.source, self.raw(key, required=True), self._name(key))

    def finish(self) -> None:
        unknown = sorted(set(self.obj) - self.seen)
        if unknown:
            raise self.error(self._name(unknown[0]), "is not a known field (check the spelling)")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _kind(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), "null" if value is None else "a number"
    )


def _show(value: object) -> str:
    text = json.dumps(value) if value is None or isinstance(value, bool | int | float | str) else _kind(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _relative_member(reader: _Reader, key: str) -> str:
    value = reader.raw(key, required=True)
    if not isinstance(value, str) or not value:
        raise reader.error(key, f"must be a file name inside the archive, got {_show(value)}")
    path = PurePosixPath(value)
    if path.is_absolute() or ".." in path.parts or "\\" in value or value != path.as_posix():
        raise reader.error(key, f"must be a relative path inside the archive without '..', got {_show(value)}")
    return value


def parse_manifest(obj: object, *, source: str = MANIFEST_NAME) -> AnyManifest:
    """Validate a decoded manifest.json and return it; raises ArchiveError with a one-line message.

    A detector's manifest (no `task`, or "detection") gives an ArchiveManifest, a classifier's
    ("classification") a ClassifierManifest."""
    top = _Reader(source, obj, "")
    version = top.raw("format_version", required=True)
    if version != FORMAT_VERSION or isinstance(version, bool):
        raise top.error("format_version", f"must be {FORMAT_VERSION}, got {_show(version)}")
    task = top.choice("task", TASKS, required=False, default=DETECTION)
    name = top.raw("name", required=False)
    if name is not None and (not isinstance(name, str) or len(name) > 200):
        raise top.error("name", "must be a string of at most 200 characters")
    model = _relative_member(top, "model")
    if task == CLASSIFICATION:
        return _parse_classifier(top, model=model, name=name)

    inp = top.child("input")
    tile = inp.integer("tile_size", lo=16, hi=4096)
    overlap = inp.integer("overlap", lo=0, hi=tile - 1)
    if overlap % 2:
        raise inp.error("input.overlap", f"must be even (half of it is trimmed from each tile side), got {overlap}")
    spacing: float | None = None
    if inp.raw("spacing_mm", required=True) is not None:
        spacing = inp.number("spacing_mm", lo=0.0, hi=0.1, lo_open=True)
    input_range = inp.choice("input_range", ("0-1", "0-255"), required=False, default="0-1")
    mean, std = _normalisation(inp)
    inp.finish()

    out = top.child("output")
    kind = out.choice("kind", ("heatmap", "points", "boxes"))
    threshold = out.number("threshold", lo=0.0, hi=1.0)
    min_score = out.number("min_score", lo=0.0, hi=1.0, required=False, default=0.05)
    if min_score > threshold:
        raise out.error("output.min_score", f"must not exceed output.threshold ({threshold:g}), got {min_score:g}")
    nms_radius = out.number("nms_radius_px", lo=0.0, hi=float(tile), lo_open=True)
    stride, activation, iou = 1, "none", 0.5
    if kind == "heatmap":
        stride = out.integer("stride", lo=1, hi=tile)
        if tile % stride:
            raise out.error("output.stride", f"must divide input.tile_size ({tile}), got {stride}")
        if overlap % (2 * stride):
            raise out.error(
                "output.stride",
                f"twice the stride must divide input.overlap ({overlap}), got stride {stride}",
            )
        activation = out.choice("activation", ("none", "sigmoid"), required=False, default="none")
    if kind == "boxes":
        iou = out.number("iou_threshold", lo=0.0, hi=1.0, lo_open=True, required=False, default=0.5)
    out.finish()

    bf16, batch_size = _runtime_hints(top)
    features_method = _features(top)
    top.finish()
    return ArchiveManifest(
        model=model,
        input=InputSpec(tile, overlap, spacing, input_range, mean, std),  # type: ignore[arg-type]
        output=OutputSpec(kind, threshold, nms_radius, stride, activation, iou, min_score),  # type: ignore[arg-type]
        bf16=bf16,
        batch_size=batch_size,
        name=name,
        features_method=features_method,
    )


def _features(top: _Reader) -> str | None:
    """features (optional): {"method": NAME}, NAME a Python identifier not starting with "_" (a method or
    submodule of the TorchScript model)."""
    if not top.has("features"):
        return None
    reader = top.child("features")
    method = reader.raw("method", required=True)
    if not isinstance(method, str) or not method.isidentifier() or method.startswith("_") or len(method) > 64:
        raise reader.error(
            "features.method", f"must name a method of the model (an identifier, not private), got {_show(method)}"
        )
    reader.finish()
    return method


def _normalisation(inp: _Reader) -> tuple[tuple[float, float, float] | None, tuple[float, float, float] | None]:
    """input.normalisation: "none" (the default) or {"mean": [r, g, b], "std": [r, g, b]}."""
    norm = inp.raw("normalisation", required=False)
    if norm is None or norm == "none":
        return None, None
    nr = inp.child("normalisation")
    mean = nr.triple("mean", positive=False)
    std = nr.triple("std", positive=True)
    nr.finish()
    return mean, std


def _runtime_hints(top: _Reader) -> tuple[bool, int | None]:
    """bf16 (default false) and batch_size (optional) at the top level."""
    bf16 = top.boolean("bf16", default=False)
    batch_size: int | None = None
    if top.has("batch_size"):
        batch_size = top.integer("batch_size", lo=1, hi=4096)
    return bf16, batch_size


def _parse_classifier(top: _Reader, *, model: str, name: str | None) -> ClassifierManifest:
    inp = top.child("input")
    patch = inp.integer("patch_size", lo=16, hi=1024)
    fit = inp.choice("fit", ("crop", "resize"), required=False, default="crop")
    input_range = inp.choice("input_range", ("0-1", "0-255"), required=False, default="0-1")
    mean, std = _normalisation(inp)
    inp.finish()

    out = top.child("output")
    kind = out.choice("kind", ("binary", "two-class"))
    options = CLASSIFIER_ACTIVATIONS[kind]
    activation = out.raw("activation", required=True)
    if activation not in options:
        raise out.error(
            "output.activation",
            f"must be one of {', '.join(map(repr, options))} for output.kind {kind!r}, got {_show(activation)}",
        )
    threshold = out.number("threshold", lo=0.0, hi=1.0, required=False, default=0.5)
    out.finish()

    bf16, batch_size = _runtime_hints(top)
    top.finish()
    return ClassifierManifest(
        model=model,
        input=PatchInputSpec(patch, fit, input_range, mean, std),  # type: ignore[arg-type]
        output=ClassifierOutputSpec(kind, activation, threshold),  # type: ignore[arg-type]
        bf16=bf16,
        batch_size=batch_size,
        name=name,
    )


def loads_manifest(data: bytes, *, source: str = MANIFEST_NAME) -> AnyManifest:
    """Parse manifest.json bytes (size-capped, UTF-8, strict JSON: NaN and Infinity are rejected)."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise ArchiveError(f"{source}: is larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        text = data.decode("utf-8")
        obj = json.loads(text, parse_constant=_reject_constant)
    except UnicodeDecodeError as exc:
        raise ArchiveError(f"{source}: is not UTF-8 text (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise ArchiveError(f"{source}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except _ConstantError as exc:
        raise ArchiveError(f"{source}: {exc.args[0]} is not allowed in JSON numbers") from None
    except RecursionError:
        raise ArchiveError(f"{source}: is nested too deeply") from None
    return parse_manifest(obj, source=source)


class _ConstantError(ValueError):
    pass


def _reject_constant(name: str) -> float:
    raise _ConstantError(name)
