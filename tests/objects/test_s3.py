"""What only the S3 store does, against a real SeaweedFS: presigned GET URLs that expire, the staging copy
cleaned up, refusals and an unreachable server told apart, objects written by other tools hashed on demand."""

from __future__ import annotations

import hashlib
import io
import time
import urllib.error
import urllib.request

import boto3
import pytest

from tests.seaweedfs import (
    ACCESS_KEY,
    BUCKET,
    READER_ACCESS_KEY,
    READER_SECRET_KEY,
    SECRET_KEY,
    OwnSeaweedFS,
    s3_store,
)
from tests.services import free_port
from worker.objects import ObjectStoreError, StoreUnavailableError
from worker.objects.s3 import S3Store


def raw_client(server: OwnSeaweedFS):  # type: ignore[no-untyped-def]
    return boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
    )


def test_a_presigned_url_serves_the_object_until_it_expires(seaweedfs: OwnSeaweedFS) -> None:
    store = s3_store(seaweedfs)
    store.put("images/001.tiff", io.BytesIO(b"pixels" * 1000))
    url = store.presigned_get("images/001.tiff", expires_s=60)
    with urllib.request.urlopen(url, timeout=10) as answer:
        assert answer.read() == b"pixels" * 1000
    short = store.presigned_get("images/001.tiff", expires_s=1)
    time.sleep(3)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(short, timeout=10)
    assert refused.value.code == 403
    with pytest.raises(urllib.error.HTTPError):  # the URL names one key; another is not reachable with it
        urllib.request.urlopen(url.replace("images/001.tiff", "images/002.tiff"), timeout=10)
    with pytest.raises(ValueError, match="expires_s"):
        store.presigned_get("images/001.tiff", expires_s=0)


def test_an_upload_without_a_known_hash_leaves_no_staging_object(seaweedfs: OwnSeaweedFS) -> None:
    store = s3_store(seaweedfs)
    assert isinstance(store, S3Store)
    store.put("a", io.BytesIO(b"x" * 100))
    store.put("b", io.BytesIO(b"y" * (11 * 1024 * 1024)))
    listed = raw_client(seaweedfs).list_objects_v2(Bucket=BUCKET, Prefix=store.prefix)
    assert sorted(o["Key"].removeprefix(store.prefix) for o in listed.get("Contents", [])) == ["a", "b"]
    head = raw_client(seaweedfs).head_object(Bucket=BUCKET, Key=store.prefix + "b")
    assert head["Metadata"]["sha256"] == hashlib.sha256(b"y" * (11 * 1024 * 1024)).hexdigest()


def test_an_object_written_by_another_tool_is_hashed_when_asked(seaweedfs: OwnSeaweedFS) -> None:
    store = s3_store(seaweedfs)
    assert isinstance(store, S3Store)
    raw_client(seaweedfs).put_object(Bucket=BUCKET, Key=store.prefix + "foreign", Body=b"from elsewhere")
    info = store.info("foreign")
    assert info is not None
    assert (info.size, info.sha256) == (14, hashlib.sha256(b"from elsewhere").hexdigest())


def test_a_read_only_identity_is_refused_writes_not_reads(seaweedfs: OwnSeaweedFS) -> None:
    writer = s3_store(seaweedfs)
    assert isinstance(writer, S3Store)
    writer.put("k", io.BytesIO(b"x"))
    reader = s3_store(
        seaweedfs, access_key=READER_ACCESS_KEY, secret_key=READER_SECRET_KEY, prefix=writer.prefix.rstrip("/")
    )
    with reader.open("k") as stream:
        assert stream.read() == b"x"
    with pytest.raises(ObjectStoreError, match="refused") as refused:
        reader.put("k", io.BytesIO(b"y"), sha256=hashlib.sha256(b"y").hexdigest())
    assert not isinstance(refused.value, StoreUnavailableError)
    with writer.open("k") as stream:
        assert stream.read() == b"x"


def test_a_wrong_secret_is_a_refusal_not_an_outage(seaweedfs: OwnSeaweedFS) -> None:
    store = s3_store(seaweedfs, secret_key="wrong")
    with pytest.raises(ObjectStoreError, match="check the bucket, access key and secret") as refused:
        store.put("k", io.BytesIO(b"x"))
    assert not isinstance(refused.value, StoreUnavailableError)


def test_an_unreachable_server_is_an_outage() -> None:
    store = S3Store(
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        bucket=BUCKET,
        access_key=ACCESS_KEY,
        secret_key=SECRET_KEY,
        connect_timeout_s=1,
    )
    with pytest.raises(StoreUnavailableError, match="unreachable"):
        store.put("k", io.BytesIO(b"x"))
    with pytest.raises(StoreUnavailableError):
        store.info("k")
