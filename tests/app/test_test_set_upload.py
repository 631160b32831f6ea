"""Organiser test-set upload (POST /api/v1/admin/test-sets/upload) and the U3 scenarios: a valid zip or tar.gz of
a synthetic set registers and serves a phase; bombs, traversal, absolute names, links, devices, FIFOs and
100k members are 422 naming the problem, and nothing is written outside the upload's temp directory."""

from __future__ import annotations

import functools
import gzip
import io
import json
import stat
import tarfile
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from api_helpers import World, bearer

from worker.datasets.manifest import TestSet as DiskTestSet
from worker.datasets.synth import generate_test_set

UPLOAD = "/api/v1/admin/test-sets/upload"


@pytest.fixture(scope="module")
def synthetic_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two tiny cases on two scanners, with real TIFFs, sha256 in the manifest and both ground-truth files."""
    root = tmp_path_factory.mktemp("synthetic") / "set"
    generate_test_set(root, scanners=2, cases_per_scanner=1, size=(128, 96), seed=3)
    return root


def set_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def make_zip(files: dict[str, bytes], *, infos: Sequence[tuple[zipfile.ZipInfo, bytes]] = ()) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        for info, data in infos:
            zf.writestr(info, data)
    return buffer.getvalue()


def tar_member(name: str, data: bytes = b"", **fields: Any) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for key, value in fields.items():
        setattr(info, key, value)
    return info, data


def make_tar(files: dict[str, bytes], *, members: Sequence[tuple[tarfile.TarInfo, bytes]] = ()) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for info, data in [*(tar_member(name, data) for name, data in files.items()), *members]:
            tar.addfile(info, io.BytesIO(data) if data else None)
    return buffer.getvalue()


def upload(world: World, content: bytes, *, name: str = "uploaded", filename: str = "set.zip") -> Any:
    return world.client.post(
        UPLOAD,
        headers=world.admin(),
        files={"file": (filename, content)},
        data={"name": name, "description": "from an archive"},
    )


def snapshot(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if not p.is_dir()}


def assert_nothing_left(world: World, tmp_path: Path, before: set[str]) -> None:
    storage = world.client.app.state.settings.storage_path  # type: ignore[attr-defined]
    assert snapshot(tmp_path) == before, "files appeared or vanished outside the upload's temp directory"
    sets_dir = storage / "test-sets"
    assert not sets_dir.exists() or list(sets_dir.iterdir()) == []
    tmp_dir = storage / "tmp"
    assert not tmp_dir.exists() or list(tmp_dir.iterdir()) == []
    assert not (tmp_path / "sentinel" / "escaped.txt").exists()


@pytest.mark.parametrize("kind", ["zip", "tar.gz", "tar.gz in one folder"])
def test_valid_archive_registers_and_serves_a_phase(
    world: World, tmp_path: Path, synthetic_set: Path, kind: str
) -> None:
    files = set_files(synthetic_set)
    if kind == "zip":
        content = make_zip(files)
    elif kind == "tar.gz":
        content = make_tar(files)
    else:  # `tar czf set.tar.gz set/`, directory entries included
        members = [tar_member("set", type=tarfile.DIRTYPE, mode=0o755)]
        content = make_tar({f"set/{name}": data for name, data in files.items()}, members=members)
    r = upload(world, content, filename=f"set.{kind.split()[0]}")
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["case_count"] == 2
    storage: Path = world.client.app.state.settings.storage_path  # type: ignore[attr-defined]
    manifest = Path(body["manifest_path"])
    assert manifest.parent.parent == (storage / "test-sets").resolve()
    disk = DiskTestSet.open(manifest.parent)
    assert [c.name for c in disk.cases] == ["001.tiff", "002.tiff"]
    assert set_files(manifest.parent) == files  # every byte as uploaded
    assert [p.name for p in (storage / "test-sets").iterdir()] == [manifest.parent.name]  # no temp dir left
    assert list((storage / "tmp").iterdir()) == []

    r = world.client.post(
        f"/api/v1/admin/challenges/{world.challenge.id}/phases",
        headers=world.admin(),
        json={"slug": "uploaded", "title": "On the uploaded set", "test_set_id": body["id"]},
    )
    assert r.status_code == 201, r.text
    phase_id = r.json()["id"]
    team = world.register("Uploaders")
    # a predictions file is validated against the uploaded set's cases: its case names and extents
    good = {
        c.name: {"type": "Multiple points", "points": [{"point": [0.01, 0.01, 0], "probability": 0.9}]}
        for c in disk.cases
    }
    outside = {**good, "002.tiff": {"type": "Multiple points", "points": [{"point": [5.0, 0.01, 0]}]}}
    r = world.submit(team["headers"], json.dumps(outside).encode(), phase_id=phase_id)
    assert r.status_code == 422
    assert "002.tiff" in r.json()["detail"]
    r = world.submit(team["headers"], json.dumps(good).encode(), phase_id=phase_id)
    assert r.status_code == 201, r.text


def _zip_symlink() -> bytes:
    link = zipfile.ZipInfo("images")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    return make_zip({}, infos=[(link, b"../../../../../sentinel"), (zipfile.ZipInfo("images/escaped.txt"), b"x")])


@functools.cache
def _many_members() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as zf:
        for i in range(100_000):
            zf.writestr(f"m/{i}", b"")
    return buffer.getvalue()


@functools.cache
def _gzip_of_zeros() -> bytes:
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb") as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        info = tarfile.TarInfo("images/001.tiff")
        info.size = 64 << 20
        tar.addfile(info, io.BytesIO(bytes(info.size)))
    return buffer.getvalue()


def _declared_huge() -> bytes:
    """A tar whose one member declares a terabyte; the data is never there."""
    info = tarfile.TarInfo("images/001.tiff")
    info.size = 1 << 40
    return gzip.compress(info.tobuf(format=tarfile.GNU_FORMAT) + bytes(4096))


# (archive builder, words the 422's detail must hold); SENTINEL stands for tmp_path/sentinel
ATTACKS: dict[str, tuple[Callable[[str], bytes], tuple[str, ...]]] = {
    "zip bomb (ratio)": (
        lambda s: make_zip({"manifest.json": b"{}", "images/001.tiff": bytes(32 << 20)}),
        ("images/001.tiff", "compression ratio"),
    ),
    "tar.gz bomb (ratio)": (lambda s: _gzip_of_zeros(), ("compression ratio",)),
    "tar bomb (declared size)": (lambda s: _declared_huge(), ("images/001.tiff", "more than the limit")),
    "zip ../ traversal": (lambda s: make_zip({"../../../../../sentinel/escaped.txt": b"x"}), ("'..'",)),
    "tar ../ traversal": (lambda s: make_tar({"images/../../../../../../sentinel/escaped.txt": b"x"}), ("'..'",)),
    "zip backslash": (lambda s: make_zip({"..\\..\\sentinel\\escaped.txt": b"x"}), ("backslash",)),
    "zip absolute": (lambda s: make_zip({f"{s}/escaped.txt": b"x"}), ("absolute",)),
    "tar absolute": (lambda s: make_tar({f"{s}/escaped.txt": b"x"}), ("absolute",)),
    "zip symlink": (lambda s: _zip_symlink(), ("'images'", "symbolic link")),
    "tar symlink": (  # the link first, then a file written through it
        lambda s: make_tar(
            {}, members=[tar_member("images", type=tarfile.SYMTYPE, linkname=s), tar_member("images/escaped.txt", b"x")]
        ),
        ("'images'", "symbolic link"),
    ),
    "tar hardlink": (
        lambda s: make_tar({}, members=[tar_member("images/001.tiff", type=tarfile.LNKTYPE, linkname="/etc/passwd")]),
        ("'images/001.tiff'", "hard link"),
    ),
    "tar device": (
        lambda s: make_tar({}, members=[tar_member("images/dev", type=tarfile.CHRTYPE, devmajor=1, devminor=3)]),
        ("'images/dev'", "device"),
    ),
    "tar fifo": (lambda s: make_tar({}, members=[tar_member("fifo", type=tarfile.FIFOTYPE)]), ("'fifo'", "FIFO")),
    "100k members": (lambda s: _many_members(), ("100000 members", "limit")),
    "not an archive": (lambda s: b"just some text, not an archive\n" * 40, ("neither a zip nor a tar",)),
}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_u3_hostile_archives_are_refused_and_leave_nothing(world: World, tmp_path: Path, attack: str) -> None:
    (tmp_path / "sentinel").mkdir()
    build, words = ATTACKS[attack]
    content = build(str(tmp_path / "sentinel"))
    before = snapshot(tmp_path)
    r = upload(world, content)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert "\n" not in detail
    for word in words:
        assert word in detail, detail
    assert_nothing_left(world, tmp_path, before)
    assert world.client.get("/api/v1/admin/test-sets", headers=world.admin()).json()[-1]["name"] != "uploaded"


def test_symlink_in_the_middle_of_a_valid_set_is_refused(world: World, tmp_path: Path, synthetic_set: Path) -> None:
    """Checks run on every member before anything is written: a valid set with one link added is refused whole."""
    (tmp_path / "sentinel").mkdir()
    files = set_files(synthetic_set)
    link = tar_member("images/003.tiff", type=tarfile.SYMTYPE, linkname=str(tmp_path / "sentinel" / "escaped.txt"))
    before = snapshot(tmp_path)
    r = upload(world, make_tar(files, members=[link]), filename="set.tar.gz")
    assert r.status_code == 422
    assert "'images/003.tiff'" in r.json()["detail"]
    assert_nothing_left(world, tmp_path, before)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ("missing image", ("'002.tiff'", "missing")),
        ("wrong sha256", ("'001.tiff'", "sha256")),
        ("ground truth mismatch", ("ground truth and manifest disagree",)),
        ("no manifest", ("manifest.json",)),
    ],
)
def test_archive_content_is_validated_like_a_server_directory(
    world: World, tmp_path: Path, synthetic_set: Path, change: str, words: tuple[str, ...]
) -> None:
    files = set_files(synthetic_set)
    if change == "missing image":
        del files["images/002.tiff"]
    elif change == "wrong sha256":
        image = bytearray(files["images/001.tiff"])
        image[-1] ^= 0xFF
        files["images/001.tiff"] = bytes(image)
    elif change == "ground truth mismatch":
        files["ground-truth/ground-truth.json"] = json.dumps({"001.tiff": []}).encode()
    else:
        del files["manifest.json"]
    before = snapshot(tmp_path)
    r = upload(world, make_zip(files))
    assert r.status_code == 422
    detail = r.json()["detail"]
    for word in words:
        assert word in detail, detail
    assert str(tmp_path) not in detail  # temp paths are not shown
    assert_nothing_left(world, tmp_path, before)


def test_size_limit_name_conflict_and_scope(world: World, tmp_path: Path, synthetic_set: Path) -> None:
    content = make_zip(set_files(synthetic_set))
    settings = world.client.app.state.settings  # type: ignore[attr-defined]
    limit, settings.max_test_set_bytes = settings.max_test_set_bytes, len(content) - 1
    try:
        before = snapshot(tmp_path)
        r = upload(world, content)
        assert r.status_code == 413
        assert_nothing_left(world, tmp_path, before)
    finally:
        settings.max_test_set_bytes = limit
    r = upload(world, content, name="synthetic")  # the world's own test set
    assert r.status_code == 409
    assert upload(world, content, name="").status_code == 422
    team = world.register("Not Organisers")
    r = world.client.post(UPLOAD, headers=team["headers"], files={"file": ("set.zip", content)}, data={"name": "x"})
    assert r.status_code == 403
    r = world.client.post(UPLOAD, headers=bearer("mdg_wrong"), files={"file": ("set.zip", content)}, data={"name": "x"})
    assert r.status_code == 401
