"""worker.datasets.unpack: the pre-scan and extraction of a test-set archive, below the API (which
tests/app/test_test_set_upload.py drives end to end with the U3 scenarios)."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from worker.archives.manifest import ArchiveError
from worker.datasets.unpack import MAX_TAR_HEADER_BYTES, UnpackLimits, archive_kind, unpack_archive

FILES = {"manifest.json": b"{}", "images/001.tiff": b"II*\x00" + bytes(300), "ground-truth/ground-truth.json": b"{}"}


def write_tar(path: Path, members: list[tuple[str, bytes | None]], mode: str = "w") -> Path:
    """(name, data) pairs; data None is a directory."""
    with tarfile.open(path, mode) as tar:  # type: ignore[call-overload]
        for name, data in members:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("mode", ["w", "w:gz", "w:bz2", "w:xz"])
def test_every_tar_compression_unpacks_with_dot_prefixes(tmp_path: Path, mode: str) -> None:
    archive = write_tar(tmp_path / "set.tar", [("./", None), *((f"./{n}", d) for n, d in FILES.items())], mode)
    assert archive_kind(archive.read_bytes()[:512]) == {"w": "tar", "w:gz": "gzip", "w:bz2": "bzip2"}.get(mode, "xz")
    root = unpack_archive(archive, tmp_path / "out")
    assert root == tmp_path / "out"
    assert tree(root) == FILES


def test_a_single_top_level_folder_is_the_root(tmp_path: Path) -> None:
    archive = tmp_path / "set.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name, data in FILES.items():
            zf.writestr(f"midog/{name}", data)
    root = unpack_archive(archive, tmp_path / "out")
    assert root == tmp_path / "out" / "midog"
    assert tree(root) == FILES


@pytest.mark.parametrize(
    ("members", "words"),
    [
        ([("a", b"x"), ("a/b", b"y")], "'a/b': 'a' is a file"),
        ([("a", b"x"), ("a", b"y")], "'a': appears twice"),
        ([(f"m{i}", b"") for i in range(4)], "more than the limit of 3 members"),
        ([("big", bytes(2000))], "'big': unpacks to more than the limit of 1000 bytes"),
    ],
)
def test_tar_layout_and_limits_are_checked_before_anything_is_written(
    tmp_path: Path, members: list[tuple[str, bytes | None]], words: str
) -> None:
    archive = write_tar(tmp_path / "set.tar", members)
    with pytest.raises(ArchiveError, match=words):
        unpack_archive(archive, tmp_path / "out", limits=UnpackLimits(max_members=3, max_total_bytes=1000))
    assert not (tmp_path / "out").exists()


def test_an_oversized_pax_header_is_refused_before_it_is_read(tmp_path: Path) -> None:
    header = tarfile.TarInfo("././@PaxHeader")
    header.type = tarfile.XHDTYPE
    header.size = 1 << 34  # 16 GiB that tarfile would otherwise read into memory
    archive = tmp_path / "pax.tar"
    archive.write_bytes(header.tobuf(format=tarfile.GNU_FORMAT) + bytes(4096))
    with pytest.raises(ArchiveError, match=f"extended tar header of {1 << 34} bytes exceeds {MAX_TAR_HEADER_BYTES}"):
        unpack_archive(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_truncated_and_foreign_files_are_one_line_errors(tmp_path: Path) -> None:
    archive = write_tar(tmp_path / "set.tar.gz", list(FILES.items()), "w:gz")
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(archive.read_bytes()[:60])
    with pytest.raises(ArchiveError, match="is not a readable tar file"):
        unpack_archive(truncated, tmp_path / "out")
    foreign = tmp_path / "image.png"
    foreign.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(600))
    with pytest.raises(ArchiveError, match="neither a zip nor a tar"):
        unpack_archive(foreign, tmp_path / "out")
    assert not (tmp_path / "out").exists()
