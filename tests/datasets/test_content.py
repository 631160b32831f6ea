"""A test set by content (worker.datasets.content): inputs and ground truth hashed apart, named in the object
store by content under a prefix per role, published once (identical images of two sets stored once)."""

from __future__ import annotations

import hashlib
import io
import shutil
from pathlib import Path

import pytest

from worker.datasets.content import content_of, object_key, publish
from worker.datasets.errors import DatasetError
from worker.datasets.synth import generate_test_set
from worker.objects.local import LocalStore


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "set"
    generate_test_set(root, scanners=2, cases_per_scanner=2, size=(96, 64), seed=1)
    return root


def test_inputs_are_the_manifest_and_the_images_and_truth_is_the_rest(synthetic: Path) -> None:
    content = content_of(synthetic)
    assert content.inputs[0].path == "manifest.json"
    assert sorted(f.path for f in content.inputs[1:]) == sorted(
        p.relative_to(synthetic).as_posix() for p in (synthetic / "images").iterdir()
    )
    assert {f.path for f in content.truth} == {
        p.relative_to(synthetic).as_posix() for p in (synthetic / "ground-truth").rglob("*") if p.is_file()
    }
    for item in (*content.inputs, *content.truth):
        data = (synthetic / item.path).read_bytes()
        assert (item.sha256, item.size) == (hashlib.sha256(data).hexdigest(), len(data))


def test_a_missing_image_is_named(synthetic: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(synthetic, copy)
    victim = next((copy / "images").iterdir())
    victim.unlink()
    with pytest.raises(DatasetError, match=f"images/{victim.name}"):
        content_of(copy)


def test_object_keys_keep_inputs_and_truth_apart() -> None:
    digest = "ab" * 32
    assert object_key("input", digest) == f"inputs/sha256/{digest}"
    assert object_key("truth", digest) == f"truth/sha256/{digest}"


def test_publishing_puts_each_file_once_by_content(synthetic: Path, tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "objects")
    content = content_of(synthetic)
    total = sum(f.size for f in (*content.inputs, *content.truth))
    assert publish(store, synthetic, content) == total
    for role in ("input", "truth"):
        for item in content.files(role):
            with store.open(object_key(role, item.sha256)) as stream:
                assert stream.read() == (synthetic / item.path).read_bytes()
    assert publish(store, synthetic, content) == 0  # already there
    twin = tmp_path / "twin"
    shutil.copytree(synthetic, twin)  # another set with the same files: nothing new to store
    assert publish(store, twin, content_of(twin)) == 0
    # a damaged object is replaced on the next publish
    first = content.inputs[1]
    store.put(object_key("input", first.sha256), io.BytesIO(b"damaged"))
    assert publish(store, synthetic, content) == first.size
