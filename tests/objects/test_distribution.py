"""The pieces a GPU host will stand on, together on a real S3 server: a test set registered by content and
published; its inputs fetched into a host's cache through presigned GET URLs that name one object each; the
second evaluation fetches 0 bytes; a damaged cache file is fetched again; the cache never holds ground truth."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.seaweedfs import OwnSeaweedFS, s3_store
from worker.blob_cache import BlobCache, read_stream
from worker.datasets.content import TestSetContent, content_of, object_key, publish
from worker.datasets.synth import generate_test_set
from worker.objects.s3 import S3Store


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory, seaweedfs: OwnSeaweedFS) -> tuple[S3Store, TestSetContent]:
    root = tmp_path_factory.mktemp("set") / "set"
    generate_test_set(root, scanners=2, cases_per_scanner=2, size=(160, 120), seed=4)
    content = content_of(root)
    store = s3_store(seaweedfs)
    assert publish(store, root, content) == sum(f.size for f in (*content.inputs, *content.truth))
    return store, content


def presigned(store: S3Store, key: str) -> Callable[[], object]:
    return lambda: urllib.request.urlopen(store.presigned_get(key, expires_s=60), timeout=30)


def evaluate(cache: BlobCache, store: S3Store, content: TestSetContent) -> int:
    """What a GPU host does before a run: every input of the set, by hash, from presigned URLs."""
    with cache.job() as job:
        for item in content.inputs:
            path = job.get(item.sha256, item.size, read_stream(presigned(store, object_key("input", item.sha256))))  # type: ignore[arg-type]
            assert path.stat().st_size == item.size
        return job.stats.bytes_fetched


def test_a_set_reaches_a_hosts_cache_once_and_damage_is_repaired(
    published: tuple[S3Store, TestSetContent], tmp_path: Path
) -> None:
    store, content = published
    cache = BlobCache(tmp_path / "cache", max_bytes=64 << 20)
    assert evaluate(cache, store, content) == sum(f.size for f in content.inputs)
    assert evaluate(cache, store, content) == 0  # the second evaluation of the set
    image = content.inputs[1]
    blob = cache.blob_path(image.sha256)
    os.chmod(blob, 0o644)
    with blob.open("r+b") as handle:
        handle.write(b"\x00" * 16)
    assert evaluate(cache, store, content) == image.size  # only the damaged file again
    stats = cache.stats()
    assert (stats.misses, stats.hits) == (len(content.inputs) + 1, 2 * len(content.inputs) - 1)


def test_the_cache_never_holds_ground_truth(published: tuple[S3Store, TestSetContent], tmp_path: Path) -> None:
    store, content = published
    cache = BlobCache(tmp_path / "cache", max_bytes=64 << 20)
    evaluate(cache, store, content)
    held = {p.name for p in (tmp_path / "cache" / "blobs").rglob("*") if p.is_file()}
    assert held == {f.sha256 for f in content.inputs}
    assert not held & {f.sha256 for f in content.truth}


def test_an_input_url_reaches_no_ground_truth(published: tuple[S3Store, TestSetContent]) -> None:
    store, content = published
    url = store.presigned_get(object_key("input", content.inputs[0].sha256), expires_s=60)
    truth = object_key("truth", content.truth[0].sha256)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url.replace(object_key("input", content.inputs[0].sha256), truth), timeout=30)
    assert refused.value.code == 403
