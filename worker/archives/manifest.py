"""The model-archive manifest (manifest.json, format_version 1): schema, parsing and serialisation.

Stdlib only (see the package docstring). Every error is one line naming the field, e.g.
``manifest.json: output.threshold: must be a number in [0, 1], got 1.5``. Unknown keys are errors, so a
misspelt optional key cannot silently fall back to its default. docs/model-archive.md documents the format.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Literal

from worker.errors import SubmissionError

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
MAX_MANIFEST_BYTES = 64 * 1024

OutputKind = Literal["heatmap", "points", "boxes"]
InputRange = Literal["0-1", "0-255"]
Activation = Literal["none", "sigmoid"]


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

    def to_dict(self) -> dict[str, Any]:
        """The JSON object that `parse_manifest` reads back to an equal manifest."""
        inp: dict[str, Any] = {
            "tile_size": self.input.tile_size,
            "overlap": self.input.overlap,
            "spacing_mm": self.input.spacing_mm,
            "input_range": self.input.input_range,
            "normalisation": (
                "none"
                if self.input.mean is None or self.input.std is None
                else {"mean": list(self.input.mean), "std": list(self.input.std)}
            ),
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
        return doc

    def dumps(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"


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


def parse_manifest(obj: object, *, source: str = MANIFEST_NAME) -> ArchiveManifest:
    """Validate a decoded manifest.json and return it; raises ArchiveError with a one-line message."""
    top = _Reader(source, obj, "")
    version = top.raw("format_version", required=True)
    if version != FORMAT_VERSION or isinstance(version, bool):
        raise top.error("format_version", f"must be {FORMAT_VERSION}, got {_show(version)}")
    name = top.raw("name", required=False)
    if name is not None and (not isinstance(name, str) or len(name) > 200):
        raise top.error("name", "must be a string of at most 200 characters")
    model = _relative_member(top, "model")

    inp = top.child("input")
    tile = inp.integer("tile_size", lo=16, hi=4096)
    overlap = inp.integer("overlap", lo=0, hi=tile - 1)
    if overlap % 2:
        raise inp.error("input.overlap", f"must be even (half of it is trimmed from each tile side), got {overlap}")
    spacing: float | None = None
    if inp.raw("spacing_mm", required=True) is not None:
        spacing = inp.number("spacing_mm", lo=0.0, hi=0.1, lo_open=True)
    input_range = inp.choice("input_range", ("0-1", "0-255"), required=False, default="0-1")
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    norm = inp.raw("normalisation", required=False)
    if norm is not None and norm != "none":
        nr = inp.child("normalisation")
        mean = nr.triple("mean", positive=False)
        std = nr.triple("std", positive=True)
        nr.finish()
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

    bf16 = top.boolean("bf16", default=False)
    batch_size: int | None = None
    if top.has("batch_size"):
        batch_size = top.integer("batch_size", lo=1, hi=4096)
    top.finish()
    return ArchiveManifest(
        model=model,
        input=InputSpec(tile, overlap, spacing, input_range, mean, std),  # type: ignore[arg-type]
        output=OutputSpec(kind, threshold, nms_radius, stride, activation, iou, min_score),  # type: ignore[arg-type]
        bf16=bf16,
        batch_size=batch_size,
        name=name,
    )


def loads_manifest(data: bytes, *, source: str = MANIFEST_NAME) -> ArchiveManifest:
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
