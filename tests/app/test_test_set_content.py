"""Test sets recorded by content at registration: every input (manifest.json and each image) and every
ground-truth file with its path, SHA-256 and size, in rows told apart by role; the input manifest a GPU host
would receive names no server path and nothing of the ground truth."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

from api_helpers import World, write_test_set
from sqlalchemy import select

from app.admin.content import input_manifest, truth_manifest
from app.tables import TestSetFile


def sha_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_registration_records_every_file_by_content(world: World, tmp_path: Path) -> None:
    root = write_test_set(tmp_path / "by-content")
    (root / "images" / "002.tiff").write_bytes(b"II*\x00another image, longer than the others")
    (root / "ground-truth" / "groups.csv").write_text("image,group\n001.tiff,A\n")
    r = world.client.post("/api/v1/admin/test-sets", headers=world.admin(), json={"name": "bc", "path": str(root)})
    assert r.status_code == 201, r.text
    rows = world.db.scalars(select(TestSetFile).where(TestSetFile.test_set_id == r.json()["id"])).all()
    recorded = {(row.role, row.path): (row.sha256, row.size) for row in rows}
    expected = {
        ("input", p): (sha_of(root / p), (root / p).stat().st_size)
        for p in ["manifest.json", "images/001.tiff", "images/002.tiff", "images/003.tiff"]
    } | {
        ("truth", p): (sha_of(root / p), (root / p).stat().st_size)
        for p in ["ground-truth/ground-truth.json", "ground-truth/groups.csv"]
    }
    assert recorded == expected


def test_the_input_manifest_never_names_the_ground_truth_or_a_server_path(world: World, tmp_path: Path) -> None:
    root = write_test_set(tmp_path / "secret-place")
    r = world.client.post("/api/v1/admin/test-sets", headers=world.admin(), json={"name": "sp", "path": str(root)})
    assert r.status_code == 201, r.text
    test_set_id = r.json()["id"]
    inputs = input_manifest(world.db, test_set_id)
    text = json.dumps(inputs)
    assert "ground-truth" not in text
    assert "secret-place" not in text
    assert str(tmp_path) not in text
    truth = truth_manifest(world.db, test_set_id)
    truth_hashes = {f["sha256"] for f in truth["files"]}
    assert truth_hashes == {sha_of(root / "ground-truth" / "ground-truth.json")}
    assert not truth_hashes & {f["sha256"] for f in inputs["files"]}
    assert [f["path"] for f in inputs["files"]] == [
        "images/001.tiff",
        "images/002.tiff",
        "images/003.tiff",
        "manifest.json",
    ]
    assert all(f["object"] == "inputs/sha256/" + f["sha256"] for f in inputs["files"])
    assert all(f["object"].startswith("truth/sha256/") for f in truth["files"])
    assert inputs["bytes"] == sum(f["size"] for f in inputs["files"])


def test_an_uploaded_set_records_paths_inside_the_set(world: World, tmp_path: Path) -> None:
    root = write_test_set(tmp_path / "to-upload")
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        tar.add(root, arcname="set")
    r = world.client.post(
        "/api/v1/admin/test-sets/upload",
        headers=world.admin(),
        data={"name": "uploaded"},
        files={"file": ("set.tar.gz", archive.getvalue(), "application/gzip")},
    )
    assert r.status_code == 201, r.text
    paths = set(world.db.scalars(select(TestSetFile.path).where(TestSetFile.test_set_id == r.json()["id"])))
    assert paths == {
        "manifest.json",
        "images/001.tiff",
        "images/002.tiff",
        "images/003.tiff",
        "ground-truth/ground-truth.json",
    }


def test_a_refused_registration_records_nothing(world: World, tmp_path: Path) -> None:
    root = write_test_set(tmp_path / "wrong-hash")
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["cases"][0]["sha256"] = "0" * 64
    (root / "manifest.json").write_text(json.dumps(manifest))
    before = len(world.db.scalars(select(TestSetFile)).all())
    r = world.client.post("/api/v1/admin/test-sets", headers=world.admin(), json={"name": "wh", "path": str(root)})
    assert r.status_code == 422
    assert "does not match its sha256" in r.json()["detail"]
    world.db.expire_all()
    assert len(world.db.scalars(select(TestSetFile)).all()) == before
