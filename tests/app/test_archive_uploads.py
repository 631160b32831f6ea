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


def test_a_tar_sent_as_a_model_archive_is_refused_at_upload_saying_what_to_do(
    world: World, sent_tasks: list[Any]
) -> None:
    _allow(world, "model", "container")
    team = world.register("Alpha")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:  # the model's files, tarred instead of zipped
        for name, data in (("manifest.json", json.dumps(MANIFEST).encode()), ("model.pt", _torchscript())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    r = world.submit(team["headers"], buffer.getvalue(), kind="model", filename="detector.tar")
    assert r.status_code == 422, r.text
    assert "model archives are zip files" in r.json()["detail"]
    assert sent_tasks == []


def test_upload_check_and_workers_apply_the_servers_upload_limits() -> None:
    """One source of truth for archive sizes: the MIDOG_MAX_*_BYTES settings, as the upload stream, its check
    and the workers' extraction apply them."""
    from app.settings import Settings
    from worker.archives import ArchiveLimits
    from worker.containers.image_archive import ImageLimits
    from worker.containers.runner import ContainerRunner, ContainerSettings
    from worker.model_runner import ModelSettings

    defaults = Settings()
    assert ArchiveLimits().max_archive_bytes == defaults.max_model_bytes
    assert ImageLimits().max_archive_bytes == defaults.max_container_bytes
    small = Settings(max_model_bytes=3 * 2**20, max_container_bytes=5 * 2**20, sandbox_backend="podman")
    assert ModelSettings.from_settings(small).max_archive_bytes == 3 * 2**20
    runner = ContainerRunner(ContainerSettings.from_settings(small))
    assert runner.limits == ImageLimits.for_upload(5 * 2**20)
    assert ArchiveLimits.for_upload(3 * 2**20).max_total_bytes == 6 * 2**20


def test_the_check_child_applies_the_limit_it_is_given(tmp_path: Any) -> None:
    from app.submissions.checks import run

    archive = tmp_path / "detector.zip"
    archive.write_bytes(model_zip())
    assert run({"kind": "model", "path": str(archive), "max_bytes": 1 << 20}) == {"ok": True, "summary": {}}
    refused = run({"kind": "model", "path": str(archive), "max_bytes": 100})
    assert refused["ok"] is False
    assert "more than the limit of 100" in refused["error"]
