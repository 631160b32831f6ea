"""Model archives and container images are checked at upload with the worker's validators (no torch, nothing
loaded): an invalid one is a 422 carrying the validator's one line, a valid one is stored and queued."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from typing import Any

from api_helpers import World

MANIFEST: dict[str, Any] = {
    "format_version": 1,
    "model": "model.pt",
    "input": {"tile_size": 256, "overlap": 32, "spacing_mm": 0.00025, "input_range": "0-1"},
    "output": {"kind": "heatmap", "stride": 4, "threshold": 0.5, "nms_radius_px": 12},
}


def _torchscript() -> bytes:
    """What torch.jit.save writes, as far as the upload check looks (member names only)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("model/code/__torch__.py", "")
        zf.writestr("model/constants.pkl", b"")
        zf.writestr("model/data.pkl", b"")
    return buffer.getvalue()


def model_zip(manifest: dict[str, Any] | None = None, model: bytes | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("manifest.json", json.dumps(MANIFEST if manifest is None else manifest))
        zf.writestr("model.pt", _torchscript() if model is None else model)
    return buffer.getvalue()


def image_tar(user: str = "1000", architecture: str = "amd64") -> bytes:
    """A minimal `docker save` archive: manifest.json, the image config and one (empty) layer."""
    config = json.dumps({"os": "linux", "architecture": architecture, "config": {"User": user}}).encode()
    layer = io.BytesIO()
    tarfile.open(fileobj=layer, mode="w").close()
    manifest = json.dumps([{"Config": "config.json", "RepoTags": ["team/detector:1"], "Layers": ["layer.tar"]}])
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in (
            ("manifest.json", manifest.encode()),
            ("config.json", config),
            ("layer.tar", layer.getvalue()),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _allow(world: World, *kinds: str) -> None:
    world.phase.allowed_kinds = ["predictions", *kinds]
    world.db.commit()


def test_a_valid_model_archive_is_stored_and_queued_for_a_gpu_worker(world: World, sent_tasks: list[Any]) -> None:
    _allow(world, "model")
    team = world.register("Alpha")
    r = world.submit(team["headers"], model_zip(), kind="model", filename="detector.zip")
    assert r.status_code == 201, r.text
    assert r.json()["kind"] == "model"
    assert sent_tasks[-1][2] == "gpu"


def test_invalid_model_archives_get_the_validators_line(world: World, sent_tasks: list[Any]) -> None:
    _allow(world, "model")
    team = world.register("Alpha")
    bad_threshold = {**MANIFEST, "output": {**MANIFEST["output"], "threshold": 1.5}}
    cases = [
        (model_zip(bad_threshold), "manifest.json: output.threshold: must be a number in [0, 1], got 1.5"),
        (model_zip(model=b"\x80\x04pickle"), "is not a TorchScript file"),
        (model_zip({**MANIFEST, "surprise": 1}), "surprise"),
        (b"PK\x03\x04" + b"\x00" * 100, ""),
    ]
    for content, message in cases:
        r = world.submit(team["headers"], content, kind="model", filename="detector.zip")
        assert r.status_code == 422, r.text
        body = r.json()
        assert body["error"] == "invalid_archive"
        assert message in body["detail"]
        assert "\n" not in body["detail"]
    assert sent_tasks == []


def test_container_images_are_checked_before_they_are_accepted(world: World, sent_tasks: list[Any]) -> None:
    _allow(world, "container")
    team = world.register("Alpha")
    r = world.submit(team["headers"], image_tar(user="0"), kind="container", filename="image.tar")
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "invalid_archive"
    assert "root" in r.json()["detail"]
    r = world.submit(team["headers"], image_tar(architecture="arm64"), kind="container", filename="image.tar")
    assert r.status_code == 422
    assert "amd64" in r.json()["detail"]
    assert sent_tasks == []
    r = world.submit(team["headers"], image_tar(), kind="container", filename="image.tar")
    assert r.status_code == 201, r.text
    assert sent_tasks[-1][2] == "gpu"
