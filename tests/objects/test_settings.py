"""The object store a deployment's settings choose: the local directory under data_dir by default, an S3
server when configured (refused at start-up without its address and bucket)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.object_store import object_store
from app.settings import Settings
from tests.seaweedfs import ACCESS_KEY, BUCKET, SECRET_KEY, OwnSeaweedFS
from worker.objects.local import LocalStore
from worker.objects.s3 import S3Store


def test_the_embedded_default_is_a_directory_under_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    store = object_store(settings)
    assert isinstance(store, LocalStore)
    assert store.root == tmp_path / "objects"
    store.put("k", io.BytesIO(b"x"))
    assert (tmp_path / "objects" / "k").read_bytes() == b"x"


def test_s3_without_its_address_is_refused_naming_the_settings(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="MIDOG_S3_ENDPOINT_URL and MIDOG_S3_BUCKET"):
        Settings(data_dir=tmp_path, object_store="s3")


def test_s3_settings_open_the_server(tmp_path: Path, seaweedfs: OwnSeaweedFS) -> None:
    settings = Settings(
        data_dir=tmp_path,
        object_store="s3",
        s3_endpoint_url=seaweedfs.endpoint,
        s3_bucket=BUCKET,
        s3_access_key=ACCESS_KEY,
        s3_secret_key=SECRET_KEY,
        s3_prefix="from-settings",
    )
    store = object_store(settings)
    assert isinstance(store, S3Store)
    info = store.put("k", io.BytesIO(b"through the settings"))
    assert store.info("k") == info
    assert not (tmp_path / "objects").exists()
