"""Fixtures for running model archives in the real sandbox: a tiny synthetic set, the reference CNN archive.

- `sandbox_runtime_dir`: a private bwrap runtime directory (reachable by the sandbox uid), so these tests
  never reap or see runs of anything else on the host.
- `tiny_set`: 3 scanners x 1 case of 768 x 640 pixels from the synthetic generator (ground truth included).
- `reference_cnn`, `reference_cnn_zip`: the committed reference CNN archive (worker/reference/archives/cnn),
  as a directory and zipped as a participant would upload it.
- `broken_archive(reference, zip)`: the reference model with a manifest that does not fit its output.
- `require_bwrap()`: in CI (CI=true) a missing bwrap is a failure, elsewhere a skip.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from worker.safe_delete import discard_tree

REPO_ROOT = Path(__file__).resolve().parents[2]
REFERENCE_CNN = REPO_ROOT / "worker" / "reference" / "archives" / "cnn"


def broken_archive(reference: Path, destination: Path) -> Path:
    """The reference model with a manifest whose stride does not match its output: the runtime exits 2."""
    manifest = json.loads((reference / "manifest.json").read_text())
    manifest["output"]["stride"] = 8
    with zipfile.ZipFile(destination, "w") as zf:
        zf.writestr("manifest.json", json.dumps(manifest))
        zf.write(reference / manifest["model"], manifest["model"])
    return destination


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require_bwrap() -> None:
    from worker.sandbox import SandboxError, get_backend

    try:
        get_backend("bwrap").check()
    except SandboxError as exc:
        if in_ci():
            pytest.fail(f"{exc} (CI requires it: .ci/services.sh installs bubblewrap)")
        pytest.skip(str(exc))


@pytest.fixture
def sandbox_runtime_dir() -> Iterator[Path]:
    # Not under pytest's 0700 tmp dirs: the sandbox uid must be able to reach its output area.
    path = Path(tempfile.mkdtemp(prefix="midog-model-tests-"))
    path.chmod(0o755)
    yield path
    discard_tree(path)


@pytest.fixture(scope="session")
def tiny_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from worker.datasets.synth import generate_test_set

    root = tmp_path_factory.mktemp("tiny-set") / "set"
    generate_test_set(root, scanners=3, cases_per_scanner=1, size=(768, 640), seed=3)
    return root


@pytest.fixture(scope="session")
def reference_cnn() -> Path:
    assert (REFERENCE_CNN / "manifest.json").is_file(), "the reference CNN archive is committed under worker/reference"
    return REFERENCE_CNN


@pytest.fixture(scope="session")
def reference_cnn_zip(reference_cnn: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from worker.reference.export import zip_archive

    return zip_archive(reference_cnn, tmp_path_factory.mktemp("zip") / "cnn.zip")
