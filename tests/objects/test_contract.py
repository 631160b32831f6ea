"""The object store contract (worker.objects), run against the local store and an S3 store on a real SeaweedFS."""

from __future__ import annotations

import hashlib
import io
import tracemalloc

import pytest

from worker.objects import ContentMismatchError, InvalidKeyError, ObjectNotFoundError, ObjectStore, check_key

MiB = 1024 * 1024


class Generated(io.RawIOBase):
    """`size` deterministic bytes made on demand (never all in memory); raises OSError after `fail_after`."""

    def __init__(self, size: int, *, seed: int = 0, fail_after: int | None = None) -> None:
        self.size = size
        self.position = 0
        self.fail_after = fail_after
        self._block = hashlib.sha256(str(seed).encode()).digest() * 2048  # 64 KiB pattern

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self.fail_after is not None and self.position >= self.fail_after:
            raise OSError("the client went away")
        n = min(len(buffer), self.size - self.position, len(self._block))
        offset = self.position % len(self._block)
        chunk = (self._block[offset:] + self._block)[:n]
        buffer[:n] = chunk
        self.position += n
        return n


def generated_digest(size: int, seed: int = 0) -> str:
    digest = hashlib.sha256()
    stream = io.BufferedReader(Generated(size, seed=seed))
    while chunk := stream.read(MiB):
        digest.update(chunk)
    return digest.hexdigest()


def read_all(store: ObjectStore, key: str) -> bytes:
    with store.open(key) as stream:
        return stream.read()


def test_put_then_get_returns_the_bytes_their_hash_and_size(store: ObjectStore) -> None:
    data = b"an image, or a model" * 1000
    info = store.put("sets/a/images/001.tiff", io.BytesIO(data))
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert info.size == len(data)
    assert read_all(store, "sets/a/images/001.tiff") == data
    assert store.info("sets/a/images/001.tiff") == info
    assert store.exists("sets/a/images/001.tiff")
    assert store.size("sets/a/images/001.tiff") == len(data)


def test_get_streams_in_pieces(store: ObjectStore) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB
    store.put("blob", io.BytesIO(data))
    pieces = []
    with store.open("blob") as stream:
        while piece := stream.read(100_000):
            assert len(piece) <= 100_000
            pieces.append(piece)
    assert len(pieces) > 5
    assert b"".join(pieces) == data


def test_an_empty_object(store: ObjectStore) -> None:
    info = store.put("empty", io.BytesIO(b""))
    assert (info.size, info.sha256) == (0, hashlib.sha256(b"").hexdigest())
    assert read_all(store, "empty") == b""


def test_a_multipart_stream_is_stored_whole_and_never_held_in_memory(store: ObjectStore) -> None:
    size = 40 * MiB  # eight 5 MiB parts
    tracemalloc.start()
    try:
        info = store.put("large/model.tar.gz", io.BufferedReader(Generated(size, seed=1)))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 5 * MiB, f"put held {peak / MiB:.1f} MiB for a {size / MiB:.0f} MiB stream"
    assert info.size == size
    assert info.sha256 == generated_digest(size, seed=1)
    assert store.info("large/model.tar.gz") == info
    digest = hashlib.sha256()
    with store.open("large/model.tar.gz") as stream:
        while chunk := stream.read(MiB):
            digest.update(chunk)
    assert digest.hexdigest() == info.sha256


@pytest.mark.parametrize("size", [1000, 12 * MiB], ids=["one-part", "multipart"])
def test_a_known_hash_is_checked_and_other_content_never_lands(store: ObjectStore, size: int) -> None:
    store.put("k", io.BytesIO(b"old content"))
    right = generated_digest(size, seed=2)
    with pytest.raises(ContentMismatchError, match="'k'"):
        store.put("k", io.BufferedReader(Generated(size, seed=3)), sha256=right)
    assert read_all(store, "k") == b"old content"
    with pytest.raises(ContentMismatchError):
        store.put("fresh", io.BufferedReader(Generated(size, seed=3)), sha256=right)
    assert not store.exists("fresh")
    info = store.put("k", io.BufferedReader(Generated(size, seed=2)), sha256=right.upper())
    assert (info.sha256, info.size) == (right, size)
    assert store.info("k") == info


@pytest.mark.parametrize("size", [1000, 12 * MiB], ids=["one-part", "multipart"])
def test_a_stream_that_fails_midway_leaves_the_old_object(store: ObjectStore, size: int) -> None:
    store.put("k", io.BytesIO(b"old content"))
    with pytest.raises(OSError, match="went away"):
        store.put("k", io.BufferedReader(Generated(size, fail_after=size // 2)))
    assert read_all(store, "k") == b"old content"
    with pytest.raises(OSError, match="went away"):
        store.put("never", io.BufferedReader(Generated(size, fail_after=size // 2)))
    assert not store.exists("never")


def test_put_replaces_an_object_and_its_hash(store: ObjectStore) -> None:
    store.put("k", io.BytesIO(b"first"))
    info = store.put("k", io.BytesIO(b"second, longer"))
    assert store.info("k") == info
    assert info.sha256 == hashlib.sha256(b"second, longer").hexdigest()
    assert read_all(store, "k") == b"second, longer"


def test_missing_objects(store: ObjectStore) -> None:
    assert store.info("nothing/here") is None
    assert not store.exists("nothing/here")
    with pytest.raises(ObjectNotFoundError, match="nothing/here"):
        store.open("nothing/here")
    with pytest.raises(ObjectNotFoundError, match="nothing/here"):
        store.size("nothing/here")
    store.delete("nothing/here")  # not an error


def test_delete(store: ObjectStore) -> None:
    store.put("a/b", io.BytesIO(b"x"))
    store.put("a/c", io.BytesIO(b"y"))
    store.delete("a/b")
    assert not store.exists("a/b")
    assert read_all(store, "a/c") == b"y"


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "..", ".hidden", "a//b", "a/.b.meta", "a/b/", "sp ace", "ü"])
def test_invalid_keys_are_refused_by_every_operation(store: ObjectStore, key: str) -> None:
    with pytest.raises(InvalidKeyError, match="object key"):
        store.put(key, io.BytesIO(b"x"))
    with pytest.raises(InvalidKeyError):
        store.open(key)
    with pytest.raises(InvalidKeyError):
        store.info(key)
    with pytest.raises(InvalidKeyError):
        store.delete(key)


def test_the_key_rule_accepts_content_addresses_and_relative_paths() -> None:
    assert check_key("blobs/sha256/" + "ab" * 32) == "blobs/sha256/" + "ab" * 32
    assert check_key("uploads/7/model_v1.2.tar.gz")


def test_a_bad_expected_hash_is_refused_before_anything_is_written(store: ObjectStore) -> None:
    with pytest.raises(ValueError, match="64 hexadecimal"):
        store.put("k", io.BytesIO(b"x"), sha256="abc")
    assert not store.exists("k")
