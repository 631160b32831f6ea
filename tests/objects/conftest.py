"""Object store fixtures: `store` runs each contract test against the local store and against an S3 store on a
real SeaweedFS server (one per session, each test under its own prefix)."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest

from tests.seaweedfs import ACCESS_KEY, BUCKET, PART, SECRET_KEY, OwnSeaweedFS, own_seaweedfs, s3_store, wait_for_writes
from worker.objects import ObjectStore
from worker.objects.local import LocalStore


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnSeaweedFS]:
    with own_seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        from worker.objects.s3 import S3Store

        store = S3Store(endpoint_url=server.endpoint, bucket=BUCKET, access_key=ACCESS_KEY, secret_key=SECRET_KEY)
        wait_for_writes(lambda: (store.ensure_bucket(), store.put("ready", io.BytesIO(b"ok"))))
        yield server


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> ObjectStore:
    if request.param == "local":
        return LocalStore(tmp_path_factory.mktemp("objects"), part_bytes=PART)
    return s3_store(request.getfixturevalue("seaweedfs"))
