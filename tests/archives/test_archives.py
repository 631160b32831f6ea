"""Upload checks for model archives: the manifest schema (one-line errors naming the field) and the zip and
directory pre-scan (traversal, links, bombs, member count), all without loading the model."""

from __future__ import annotations

import copy
import io
import json
import os
import stat
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from worker.archives import ArchiveError, ArchiveLimits, extract_archive, parse_manifest, validate_archive
from worker.archives.manifest import loads_manifest
from worker.errors import SubmissionError

VALID: dict[str, Any] = {
    "format_version": 1,
    "name": "reference-cnn",
    "model": "model.pt",
    "input": {
        "tile_size": 512,
        "overlap": 64,
        "spacing_mm": 0.00025,
        "input_range": "0-1",
        "normalisation": {"mean": [0.8, 0.6, 0.7], "std": [0.1, 0.1, 0.1]},
    },
    "output": {"kind": "heatmap", "stride": 4, "activation": "sigmoid", "threshold": 0.5, "nms_radius_px": 12},
    "bf16": True,
}


def _torchscript_bytes() -> bytes:
    """The member layout of a TorchScript file; the contents are junk, which proves nothing is unpickled."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name in ("m/data.pkl", "m/code/__torch__/m.py", "m/constants.pkl", "m/version"):
            zf.writestr(name, b"\x80not a pickle")
    return buf.getvalue()


def _pickle_bytes() -> bytes:
    """The member layout of torch.save output: no code/, no constants.pkl."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name in ("m/data.pkl", "m/version", "m/data/0"):
            zf.writestr(name, b"x")
    return buf.getvalue()


def _zip(path: Path, members: dict[str, bytes], *, manifest: dict[str, Any] | None = VALID) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        if manifest is not None:
            zf.writestr("manifest.json", json.dumps(manifest))
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _with(path: str, value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(VALID)
    *parents, last = path.split(".")
    node = doc
    for p in parents:
        node = node[p]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return doc


_DELETE = object()


def test_valid_manifest_round_trips() -> None:
    manifest = parse_manifest(VALID)
    assert manifest.input.tile_size == 512
    assert manifest.output.kind == "heatmap"
    assert manifest.output.min_score == 0.05
    assert manifest.input.mean == (0.8, 0.6, 0.7)
    assert parse_manifest(json.loads(manifest.dumps())) == manifest


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("format_version", 2, "format_version: must be 1, got 2"),
        ("model", _DELETE, "model: is required"),
        ("model", "../model.pt", "model: must be a relative path inside the archive"),
        ("model", "/abs/model.pt", "model: must be a relative path inside the archive"),
        ("input.tile_size", 8, "input.tile_size: must be an integer in [16, 4096], got 8"),
        ("input.tile_size", 512.0, "input.tile_size: must be an integer in [16, 4096], got 512.0"),
        ("input.overlap", 512, "input.overlap: must be an integer in [0, 511], got 512"),
        ("input.overlap", 63, "input.overlap: must be even"),
        ("input.spacing_mm", -1, "input.spacing_mm: must be a number in (0, 0.1], got -1"),
        ("input.spacing_mm", _DELETE, "input.spacing_mm: is required"),
        ("input.input_range", "0-65535", "input.input_range: must be one of '0-1', '0-255'"),
        ("input.normalisation", {"mean": [1, 2], "std": [1, 1, 1]}, "input.normalisation.mean: must be a list of 3"),
        (
            "input.normalisation",
            {"mean": [1, 2, 3], "std": [1, 0, 1]},
            "input.normalisation.std: must be a list of 3 positive",
        ),
        (
            "input.normalisation",
            {"mean": [1, 2, 3], "std": [1, 1, 1], "x": 1},
            "input.normalisation.x: is not a known field",
        ),
        ("input.tile", 512, "input.tile: is not a known field"),
        ("output.kind", "masks", "output.kind: must be one of 'heatmap', 'points', 'boxes', got \"masks\""),
        ("output.threshold", 1.5, "output.threshold: must be a number in [0, 1], got 1.5"),
        ("output.threshold", True, "output.threshold: must be a number in [0, 1], got true"),
        ("output.threshold", _DELETE, "output.threshold: is required"),
        ("output.min_score", 0.9, "output.min_score: must not exceed output.threshold (0.5), got 0.9"),
        ("output.stride", 3, "output.stride: must divide input.tile_size (512), got 3"),
        ("output.stride", 64, "output.stride: twice the stride must divide input.overlap (64), got stride 64"),
        ("output.nms_radius_px", 0, "output.nms_radius_px: must be a number in (0, 512], got 0"),
        ("output.activation", "softmax", "output.activation: must be one of 'none', 'sigmoid'"),
        ("output.iou_threshold", 0.5, "output.iou_threshold: is not a known field"),
        ("bf16", "yes", 'bf16: must be true or false, got "yes"'),
        ("batch_size", 0, "batch_size: must be an integer in [1, 4096], got 0"),
        ("input", [], "input: must be a JSON object, got a list"),
    ],
)
def test_each_schema_violation_is_one_line_naming_the_field(field: str, value: Any, message: str) -> None:
    with pytest.raises(ArchiveError) as info:
        parse_manifest(_with(field, value))
    text = str(info.value)
    assert text.startswith("manifest.json: ")
    assert message in text
    assert "\n" not in text
    assert isinstance(info.value, SubmissionError)


def test_boxes_take_an_iou_threshold_and_no_stride() -> None:
    doc = _with("output", {"kind": "boxes", "threshold": 0.4, "nms_radius_px": 10, "iou_threshold": 0.3})
    assert parse_manifest(doc).output.iou_threshold == 0.3
    doc["output"]["stride"] = 4
    with pytest.raises(ArchiveError, match=r"output\.stride: is not a known field"):
        parse_manifest(doc)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'{"format_version": NaN}', "NaN is not allowed"),
        (b"{", "invalid JSON at line 1"),
        (b"\xff\xfe", "is not UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, "larger than"),
    ],
)
def test_malformed_manifest_bytes(data: bytes, message: str) -> None:
    with pytest.raises(ArchiveError, match=message):
        loads_manifest(data)


def test_valid_zip_and_its_extraction(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "a.zip", {"model.pt": _torchscript_bytes(), "notes/readme.txt": b"hi"})
    assert validate_archive(archive).model == "model.pt"
    root = extract_archive(archive, tmp_path / "x")
    assert (root / "manifest.json").is_file()
    assert (root / "notes" / "readme.txt").read_bytes() == b"hi"
    assert validate_archive(root).name == "reference-cnn"


def test_zip_with_everything_in_one_top_level_folder(tmp_path: Path) -> None:
    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("my-model/manifest.json", json.dumps(VALID))
        zf.writestr("my-model/model.pt", _torchscript_bytes())
    root = extract_archive(path, tmp_path / "x")
    assert root == tmp_path / "x" / "my-model"
    assert (root / "model.pt").is_file()


def _symlink_member(name: str, target: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    info.create_system = 3
    return info


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ({"../evil.py": b"x"}, "'..', '.' and empty path components are not allowed"),
        ({"a/../../evil.py": b"x"}, "'..', '.' and empty path components are not allowed"),
        ({"/etc/cron.d/evil": b"x"}, "absolute paths are not allowed"),
        ({"C:/evil": b"x"}, "absolute paths are not allowed"),
        ({"a\\..\\evil": b"x"}, "backslash"),
        ({"model.pt": _pickle_bytes()}, "is not TorchScript (a torch.save pickle?)"),
        ({"model.pt": b"\x80\x04\x95 pickle"}, "is not a TorchScript file"),
        ({"other.pt": _torchscript_bytes()}, "model: 'model.pt' is not a file in the archive"),
    ],
)
def test_hostile_or_wrong_members_are_refused(tmp_path: Path, members: dict[str, bytes], message: str) -> None:
    archive = _zip(tmp_path / "a.zip", members)
    with pytest.raises(ArchiveError, match=message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        validate_archive(archive)
    with pytest.raises(ArchiveError):
        extract_archive(archive, tmp_path / "x")
    assert not (tmp_path / "x").exists()
    assert not (tmp_path.parent / "evil.py").exists()


def test_symlink_and_device_members_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("manifest.json", json.dumps(VALID))
        zf.writestr("model.pt", _torchscript_bytes())
        zf.writestr(_symlink_member("link", "/etc/passwd"), "/etc/passwd")
    with pytest.raises(ArchiveError, match="'link': symbolic links are not allowed"):
        validate_archive(path)
    fifo = zipfile.ZipInfo("fifo")
    fifo.external_attr = (stat.S_IFIFO | 0o644) << 16
    path2 = tmp_path / "b.zip"
    with zipfile.ZipFile(path2, "w") as zf:
        zf.writestr("manifest.json", json.dumps(VALID))
        zf.writestr("model.pt", _torchscript_bytes())
        zf.writestr(fifo, b"")
    with pytest.raises(ArchiveError, match="only regular files and directories"):
        validate_archive(path2)


def test_zip_bomb_by_ratio_and_by_total_size(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "a.zip", {"model.pt": _torchscript_bytes(), "pad.bin": b"\0" * (8 << 20)})
    assert archive.stat().st_size < 100_000
    with pytest.raises(ArchiveError, match="'pad.bin': compression ratio .* exceeds the limit of 200"):
        validate_archive(archive)
    limits = ArchiveLimits(max_total_bytes=1 << 20, max_ratio=1e9)
    with pytest.raises(ArchiveError, match="unpacks to more than the limit of 1048576 bytes"):
        validate_archive(archive, limits=limits)


def test_too_many_members_and_oversized_archive(tmp_path: Path) -> None:
    members = {f"f{i}.txt": b"x" for i in range(300)}
    members["model.pt"] = _torchscript_bytes()
    archive = _zip(tmp_path / "a.zip", members)
    with pytest.raises(ArchiveError, match="has 302 members, more than the limit of 256"):
        validate_archive(archive)
    with pytest.raises(ArchiveError, match="bytes, more than the limit of 1000"):
        validate_archive(archive, limits=ArchiveLimits(max_archive_bytes=1000))


def test_not_a_zip_and_duplicate_members(tmp_path: Path) -> None:
    bad = tmp_path / "a.zip"
    bad.write_bytes(b"\x1f\x8b gzip, not zip")
    with pytest.raises(ArchiveError, match="is not a zip file"):
        validate_archive(bad)
    dup = tmp_path / "d.zip"
    with zipfile.ZipFile(dup, "w") as zf:
        zf.writestr("manifest.json", json.dumps(VALID))
        zf.writestr("model.pt", _torchscript_bytes())
        with pytest.warns(UserWarning, match="Duplicate name"):
            zf.writestr("model.pt", _torchscript_bytes())
    with pytest.raises(ArchiveError, match="'model.pt': appears twice"):
        validate_archive(dup)


def test_a_member_larger_than_its_header_says_is_stopped_while_extracting(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "a.zip", {"model.pt": _torchscript_bytes(), "data.bin": b"y" * 5000})
    raw = bytearray(archive.read_bytes())
    # Shrink the declared size of data.bin in its central-directory entry (the last mention of its name):
    # zipfile then reads at most that much and the CRC no longer matches; nothing may land outside `x`.
    header = raw.rfind(b"PK\x01\x02", 0, raw.rfind(b"data.bin"))
    assert int.from_bytes(raw[header + 24 : header + 28], "little") == 5000
    raw[header + 24 : header + 28] = (100).to_bytes(4, "little")
    archive.write_bytes(bytes(raw))
    with pytest.raises(ArchiveError, match="'data.bin'"):
        extract_archive(archive, tmp_path / "x")


def test_directory_archive_with_a_symlink_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "arch"
    root.mkdir()
    (root / "manifest.json").write_text(json.dumps(VALID))
    (root / "model.pt").write_bytes(_torchscript_bytes())
    assert validate_archive(root).model == "model.pt"
    os.symlink("/etc/passwd", root / "labels.json")
    with pytest.raises(ArchiveError, match="'labels.json': symbolic links are not allowed"):
        validate_archive(root)


def test_the_package_never_imports_torch_or_numpy() -> None:
    code = "import sys, worker.archives; print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'numpy')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_documented_example_manifest_is_valid() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "model-archive.md").read_text(encoding="utf-8")
    example = doc.split("```json\n", 1)[1].split("```", 1)[0]
    manifest = loads_manifest(example.encode())
    assert manifest.output.kind == "heatmap"
    assert manifest.input.spacing_mm == 0.00025
