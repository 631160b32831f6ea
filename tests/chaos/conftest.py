"""Fixtures of the chaos suite: the test sets and submissions its scenarios kill things in the middle of.

- `model_set`: 3 scanners x 2 synthetic cases of 1536 x 1152 pixels (images and ground truth): the reference
  CNN needs several seconds for it on one core inside the sandbox, long enough to be killed mid-run.
- `reference_cnn_zip`: the committed reference CNN archive, zipped as a participant uploads it.
- `heavy_set`, `heavy_predictions`: 4,500 cases without images and a predictions file for them; with
  10,000 bootstrap resamples its scoring takes seconds, long enough to kill a cpu worker mid-scoring.
- `runtime_dir`: a private sandbox runtime directory the sandbox's uid can traverse.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.worker.conftest import SmallSet, build_set, make_predictions
from worker.safe_delete import remove_tree

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def model_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from worker.datasets.synth import generate_test_set

    root = tmp_path_factory.mktemp("chaos-model-set") / "set"
    generate_test_set(root, scanners=3, cases_per_scanner=2, size=(1536, 1152), seed=11)
    return root


@pytest.fixture(scope="session")
def reference_cnn_zip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    from worker.reference.export import zip_archive

    path = zip_archive(
        REPO_ROOT / "worker" / "reference" / "archives" / "cnn", tmp_path_factory.mktemp("cnn") / "a.zip"
    )
    return path.read_bytes()


@pytest.fixture(scope="session")
def heavy_set(tmp_path_factory: pytest.TempPathFactory) -> SmallSet:
    return build_set(tmp_path_factory.mktemp("chaos-heavy-set"), cases_per_scanner=1500)


@pytest.fixture(scope="session")
def heavy_predictions(heavy_set: SmallSet) -> bytes:
    return json.dumps(make_predictions(heavy_set, 3)).encode()


@pytest.fixture
def runtime_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="midog-chaos-sandbox-"))
    path.chmod(0o755)
    yield path
    remove_tree(path)
