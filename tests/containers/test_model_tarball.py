"""Model tarballs: the upload check and the extraction refuse the same unsafe archives, and extract the rest."""

from __future__ import annotations

import hashlib
import io
import stat
import tarfile
from pathlib import Path

import pytest

from worker.containers.model_tarball import ModelTarballError, check_model_tarball, extract_model_tarball


def _tarball(path: Path, members: list[tuple[str, bytes | None]], *, mode: str = "w:gz") -> Path:
    """members: (name, content) for files, (name, None) for directories."""
    with tarfile.open(path, mode) as tar:
        for name, content in members:
            info = tarfile.TarInfo(name)
            if content is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return path


def test_a_tarball_made_with_tar_czf_is_checked_and_extracted(tmp_path: Path) -> None:
    path = _tarball(tmp_path / "model.tar.gz", [(".", None), ("./weights", None), ("./weights/w.pt", b"x" * 1000)])
    info = check_model_tarball(path)
    assert (info.files, info.bytes) == (1, 1000)
    assert info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    dest = tmp_path / "out"
    assert extract_model_tarball(path, dest) == info
    extracted = dest / "weights" / "w.pt"
    assert extracted.read_bytes() == b"x" * 1000
    assert stat.S_IMODE(extracted.stat().st_mode) == 0o644


def test_an_uncompressed_tar_is_accepted(tmp_path: Path) -> None:
    path = _tarball(tmp_path / "model.tar", [("w.bin", b"abc")], mode="w")
    assert check_model_tarball(path).files == 1


@pytest.mark.parametrize(
    ("members", "fragment"),
    [
        ([("../evil", b"x")], "'..' component"),
        ([("/etc/passwd", b"x")], "unsafe name"),
        ([("a", b"x"), ("./a", b"y")], "appears twice"),
        ([("d", None)], "holds no files"),
    ],
)
def test_unsafe_or_empty_tarballs_are_refused_with_one_line(
    tmp_path: Path, members: list[tuple[str, bytes | None]], fragment: str
) -> None:
    path = _tarball(tmp_path / "model.tar.gz", members)
    with pytest.raises(ModelTarballError, match=fragment):
        check_model_tarball(path)
    dest = tmp_path / "out"
    with pytest.raises(ModelTarballError, match=fragment):
        extract_model_tarball(path, dest)
    assert not (tmp_path / "evil").exists()


def test_links_are_refused_and_nothing_is_written_through_them(tmp_path: Path) -> None:
    path = tmp_path / "model.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        link = tarfile.TarInfo("escape")
        link.type = tarfile.SYMTYPE
        link.linkname = str(tmp_path)
        tar.addfile(link)
        data = tarfile.TarInfo("escape/owned")
        data.size = 1
        tar.addfile(data, io.BytesIO(b"x"))
    with pytest.raises(ModelTarballError, match="is a link"):
        check_model_tarball(path)
    with pytest.raises(ModelTarballError, match="is a link"):
        extract_model_tarball(path, tmp_path / "out")
    assert not (tmp_path / "owned").exists()


def test_size_and_count_limits_bound_the_check(tmp_path: Path) -> None:
    path = _tarball(tmp_path / "model.tar.gz", [(f"f{i}", b"0" * 600) for i in range(5)])
    with pytest.raises(ModelTarballError, match="more than 3 files"):
        check_model_tarball(path, max_files=3)
    # 3,000 bytes of content from a file far smaller: the content bound is twice the upload bound
    with pytest.raises(ModelTarballError, match="content exceeds"):
        check_model_tarball(path, max_bytes=path.stat().st_size + 1000)
    with pytest.raises(ModelTarballError, match="over the limit"):
        check_model_tarball(path, max_bytes=10)


def test_a_file_that_is_not_a_tarball_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.tar.gz"
    path.write_bytes(b"PK\x03\x04 not a tar")
    with pytest.raises(ModelTarballError, match="not a readable"):
        check_model_tarball(path)
