"""A test set by content: every file's path relative to the set, SHA-256 and size, in two parts that never mix.

- `inputs`: what a participant's run may see and a GPU host fetches: `manifest.json` and each case's image.
- `truth`: every file under `ground-truth/`, for the scoring role only.

`content_of(root)` hashes each file once (streamed). `object_key(role, sha256)` names a file's object in the
object store by content, under a prefix per role (`inputs/sha256/...`, `truth/sha256/...`), so that a store
policy or the API can hand out input objects without ever reaching the ground truth, and identical images
of several sets are stored once. `publish(store, root, content)` puts the files there (skipping objects
already present with the same hash).

Standard library and worker.objects only (no app, Celery, SQLAlchemy, FastAPI or torch).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from worker.datasets.errors import DatasetError
from worker.datasets.manifest import GROUND_TRUTH_DIR, MANIFEST_NAME, TestSet
from worker.objects import ObjectStore

Role = Literal["input", "truth"]
ROLES: tuple[Role, ...] = ("input", "truth")
_PREFIX: dict[Role, str] = {"input": "inputs/sha256", "truth": "truth/sha256"}


@dataclass(frozen=True)
class ContentFile:
    path: str  # relative to the set's root, '/'-separated
    sha256: str
    size: int

    def to_json(self) -> dict[str, object]:
        return {"path": self.path, "sha256": self.sha256, "size": self.size}


@dataclass(frozen=True)
class TestSetContent:
    __test__ = False  # not a pytest test class

    inputs: tuple[ContentFile, ...]
    truth: tuple[ContentFile, ...]

    def files(self, role: Role) -> tuple[ContentFile, ...]:
        return self.inputs if role == "input" else self.truth

    def sha256_of(self, path: str) -> str | None:
        return next((f.sha256 for f in (*self.inputs, *self.truth) if f.path == path), None)


def object_key(role: Role, sha256: str) -> str:
    """The object-store key of a test-set file by content (inputs and truth under different prefixes)."""
    return f"{_PREFIX[role]}/{sha256}"


def content_of(root: Path) -> TestSetContent:
    """Hash a test set's inputs (manifest.json and every case image, each once) and its ground-truth files."""
    root = Path(root)
    disk = TestSet.open(root)
    resolved = root.resolve()
    input_paths = [MANIFEST_NAME]
    for case in disk.cases:
        if case.image is not None and case.image not in input_paths:
            image = disk.image_path(case).resolve()
            if not image.is_relative_to(resolved) or not image.is_file():
                raise DatasetError(f"case {case.name!r}: image {case.image!r} is missing")
            input_paths.append(image.relative_to(resolved).as_posix())
    truth_dir = root / GROUND_TRUTH_DIR
    truth_paths = sorted(
        p.relative_to(root).as_posix() for p in truth_dir.rglob("*") if p.is_file() and not p.is_symlink()
    )
    if any(path.startswith(GROUND_TRUTH_DIR + "/") for path in input_paths):
        raise DatasetError(f"an image lies under {GROUND_TRUTH_DIR}/: inputs and ground truth must stay apart")
    return TestSetContent(
        inputs=tuple(_hashed(root, p) for p in input_paths), truth=tuple(_hashed(root, p) for p in truth_paths)
    )


def _hashed(root: Path, relative: str, chunk: int = 1 << 22) -> ContentFile:
    digest = hashlib.sha256()
    size = 0
    with (root / relative).open("rb") as source:
        while block := source.read(chunk):
            digest.update(block)
            size += len(block)
    return ContentFile(path=relative, sha256=digest.hexdigest(), size=size)


def publish(store: ObjectStore, root: Path, content: TestSetContent) -> int:
    """Put every file of the set into `store` by content (verified against the recorded hash); objects already
    there with that hash are skipped. Returns the bytes uploaded."""
    uploaded = 0
    for role in ROLES:
        for item in content.files(role):
            key = object_key(role, item.sha256)
            present = store.info(key)
            if present is not None and present.sha256 == item.sha256:
                continue
            store.put_file(key, root / item.path, sha256=item.sha256)
            uploaded += item.size
    return uploaded
