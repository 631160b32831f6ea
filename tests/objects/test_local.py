"""What only the local store does: temp files never left behind, and a sidecar that no longer describes its
file (a crash between sidecar and rename, a file changed on disk) is never believed."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest

from worker.objects import ContentMismatchError
from worker.objects.configured import open_store
from worker.objects.local import LocalStore


def test_failed_puts_leave_no_temp_file(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    with pytest.raises(ContentMismatchError):
        store.put("a/b", io.BytesIO(b"x"), sha256="0" * 64)
    store.put("a/c", io.BytesIO(b"y"))
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == [".c.meta", "c"]


def test_a_file_changed_on_disk_is_hashed_again(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.put("k", io.BytesIO(b"original"))
    path = tmp_path / "k"
    path.write_bytes(b"tampered")  # same inode, new mtime and size
    info = store.info("k")
    assert info is not None
    assert info.sha256 == hashlib.sha256(b"tampered").hexdigest()
    os.utime(path, ns=(1, 1))  # same size, other mtime: still not believed
    path.write_bytes(b"tempered")
    os.utime(path, ns=(1, 1))
    assert store.info("k").sha256 == hashlib.sha256(b"tempered").hexdigest()  # type: ignore[union-attr]


def test_a_sidecar_of_another_file_is_not_believed(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.put("k", io.BytesIO(b"one"))
    sidecar = (tmp_path / ".k.meta").read_bytes()
    store.put("k", io.BytesIO(b"two"))
    (tmp_path / ".k.meta").write_bytes(sidecar)  # as if the process died between sidecar and rename
    assert store.info("k").sha256 == hashlib.sha256(b"two").hexdigest()  # type: ignore[union-attr]


def test_an_object_cannot_be_a_folder_of_another(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.put("a", io.BytesIO(b"x"))
    with pytest.raises(ValueError, match="folder"):
        store.put("a/b", io.BytesIO(b"y"))
    store.put("c/d", io.BytesIO(b"z"))
    with pytest.raises(ValueError, match="folder"):
        store.put("c", io.BytesIO(b"w"))


def test_the_local_store_has_no_presigned_urls(tmp_path: Path) -> None:
    with pytest.raises(NotImplementedError, match="through the API"):
        LocalStore(tmp_path).presigned_get("k", expires_s=60)


def test_open_store_chooses_the_kind(tmp_path: Path) -> None:
    assert isinstance(open_store("local", root=tmp_path), LocalStore)
    with pytest.raises(ValueError, match="root"):
        open_store("local")
    with pytest.raises(ValueError, match="endpoint_url, bucket"):
        open_store("s3")
    with pytest.raises(ValueError, match="'local' or 's3'"):
        open_store("ftp")
