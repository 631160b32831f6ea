"""Image archive validation from manifest.json and the image config, before anything is loaded.

The archives are written here with tarfile in the docker-archive layout (`docker save` / `podman save`),
so each rule is exercised by a minimal, otherwise valid archive that breaks exactly that rule.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from worker.containers.image_archive import ImageArchiveError, ImageLimits, validate_image_archive
from worker.errors import SubmissionError

PASSWD = (
    b"root:x:0:0:root:/root:/bin/sh\nuser:x:999:999::/home/user:/bin/sh\nalgorithm:x:1000:1000::/opt/algo:/bin/sh\n"
)
GROUP = b"root:x:0:\nuser:x:999:\nvideo:x:44:user\nrender:x:105:user,algorithm\nalgorithm:x:1000:\n"


def _layer(files: dict[str, bytes] | None = None, *, gzipped: bool = False) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz" if gzipped else "w") as tar:
        content = {"app/run.sh": b"#!/bin/sh\necho hi\n", "etc/passwd": PASSWD, "etc/group": GROUP}
        for name, data in (content if files is None else files).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def make_archive(
    path: Path,
    *,
    user: Any = "10001:10001",
    architecture: str = "amd64",
    os_name: str = "linux",
    images: int = 1,
    extra: Callable[[tarfile.TarFile], None] | None = None,
    config_name: str | None = None,
    manifest: Any = None,
    layers: list[bytes] | None = None,
    compress: bool = False,
) -> Path:
    blobs = layers if layers is not None else [_layer()]
    config = json.dumps(
        {
            "architecture": architecture,
            "os": os_name,
            "config": {"User": user, "Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(b).hexdigest()}" for b in blobs]},
        }
    ).encode()
    digest = hashlib.sha256(config).hexdigest()
    name = config_name or f"{digest}.json"
    entries = [
        {
            "Config": name,
            "RepoTags": [f"localhost/team/algo:{i}"],
            "Layers": [f"{hashlib.sha256(b).hexdigest()}.tar" for b in blobs],
        }
        for i in range(images)
    ]
    with tarfile.open(path, "w:gz" if compress else "w") as tar:
        for member, data in (
            (name, config),
            *((f"{hashlib.sha256(b).hexdigest()}.tar", b) for b in blobs),
            ("manifest.json", json.dumps(manifest if manifest is not None else entries).encode()),
        ):
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if extra:
            extra(tar)
    return path


def test_valid_archive_is_described_without_loading(tmp_path: Path) -> None:
    path = make_archive(tmp_path / "image.tar")
    info = validate_image_archive(path)
    assert info.user == "10001:10001"
    assert info.numeric_user == (10001, 10001)
    assert info.repo_tags == ("localhost/team/algo:0",)
    assert len(info.image_id) == 64
    assert info.architecture == "amd64"
    assert info.run_user.uid == 10001
    assert info.run_user.home == "/tmp"


def test_gzipped_archive_is_read_like_a_plain_one(tmp_path: Path) -> None:
    plain = validate_image_archive(make_archive(tmp_path / "image.tar", user="user"))
    packed = validate_image_archive(make_archive(tmp_path / "image.tar.gz", user="user", compress=True))
    assert packed == plain


def test_named_user_resolved_with_groups_and_home(tmp_path: Path) -> None:
    user = validate_image_archive(make_archive(tmp_path / "image.tar", user="user")).run_user
    assert (user.uid, user.gid, user.groups, user.home, user.name) == (999, 999, (44, 105), "/home/user", "user")
    numeric = validate_image_archive(make_archive(tmp_path / "n.tar", user="1000:105")).run_user
    assert (numeric.uid, numeric.gid, numeric.groups, numeric.home) == (1000, 105, (), "/opt/algo")
    named_group = validate_image_archive(make_archive(tmp_path / "g.tar", user="user:render")).run_user
    assert (named_group.gid, named_group.groups) == (105, (44,))


def test_later_layers_and_gzipped_layers_decide_the_accounts(tmp_path: Path) -> None:
    moved = PASSWD.replace(b"999:999::/home/user", b"1234:1234::/srv/user")
    layers = [_layer(), _layer({"etc/passwd": moved}, gzipped=True)]
    user = validate_image_archive(make_archive(tmp_path / "a.tar", user="user", layers=layers)).run_user
    assert (user.uid, user.home) == (1234, "/srv/user")
    deleted = [_layer(), _layer({"etc/.wh.passwd": b""})]
    with pytest.raises(ImageArchiveError, match="useradd"):
        validate_image_archive(make_archive(tmp_path / "b.tar", user="user", layers=deleted))


@pytest.mark.parametrize(
    ("user", "message"),
    [("nobody-here", "not in the image's /etc/passwd"), ("user:nogroup", "not in the image's /etc/group")],
)
def test_unresolvable_user_refused(tmp_path: Path, user: str, message: str) -> None:
    with pytest.raises(ImageArchiveError, match=message):
        validate_image_archive(make_archive(tmp_path / "image.tar", user=user))


def test_name_that_is_root_refused(tmp_path: Path) -> None:
    layers = [_layer({"etc/passwd": b"admin:x:0:0::/root:/bin/sh\n"})]
    with pytest.raises(ImageArchiveError, match="root"):
        validate_image_archive(make_archive(tmp_path / "image.tar", user="admin", layers=layers))


@pytest.mark.parametrize("user", [None, "", "root", "0", "0:0", "root:root", "0:1000", " 0 "])
def test_root_user_refused(tmp_path: Path, user: Any) -> None:
    with pytest.raises(ImageArchiveError, match="non-root USER"):
        validate_image_archive(make_archive(tmp_path / "image.tar", user=user))


@pytest.mark.parametrize("user", ["1000", "1000:1000", "algorithm", "10001:0"])
def test_non_root_users_accepted(tmp_path: Path, user: str) -> None:
    assert validate_image_archive(make_archive(tmp_path / "image.tar", user=user)).user == user


def test_architecture_and_os(tmp_path: Path) -> None:
    with pytest.raises(ImageArchiveError, match="architecture 'arm64'"):
        validate_image_archive(make_archive(tmp_path / "a.tar", architecture="arm64"))
    with pytest.raises(ImageArchiveError, match="os 'windows'"):
        validate_image_archive(make_archive(tmp_path / "b.tar", os_name="windows"))


def test_exactly_one_image(tmp_path: Path) -> None:
    with pytest.raises(ImageArchiveError, match="exactly one image, manifest.json lists 2"):
        validate_image_archive(make_archive(tmp_path / "a.tar", images=2))
    with pytest.raises(ImageArchiveError, match="exactly one image"):
        validate_image_archive(make_archive(tmp_path / "b.tar", manifest=[]))


def test_missing_manifest_and_not_a_tar(tmp_path: Path) -> None:
    path = tmp_path / "empty.tar"
    with tarfile.open(path, "w"):
        pass
    with pytest.raises(ImageArchiveError, match="no manifest.json"):
        validate_image_archive(path)
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"\x7fELF" + b"\x00" * 2000)
    with pytest.raises(ImageArchiveError, match="not a readable image archive"):
        validate_image_archive(junk)


def test_layer_missing_from_archive(tmp_path: Path) -> None:
    manifest = [{"Config": "x.json", "RepoTags": [], "Layers": ["nowhere.tar"]}]
    with pytest.raises(ImageArchiveError, match="not in the archive"):
        validate_image_archive(make_archive(tmp_path / "a.tar", manifest=manifest))


def test_config_digest_must_match(tmp_path: Path) -> None:
    with pytest.raises(ImageArchiveError, match="does not match its digest"):
        validate_image_archive(make_archive(tmp_path / "a.tar", config_name="0" * 64 + ".json"))


def _member(kind: bytes, name: str, linkname: str = "") -> Callable[[tarfile.TarFile], None]:
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.linkname = linkname
        tar.addfile(info, io.BytesIO(b"") if kind == tarfile.REGTYPE else None)

    return add


@pytest.mark.parametrize(
    ("add", "message"),
    [
        (_member(tarfile.REGTYPE, "../escape"), "'..' component"),
        (_member(tarfile.REGTYPE, "/etc/cron.d/x"), "unsafe name"),
        (_member(tarfile.SYMTYPE, "evil", "/etc/passwd"), "points outside"),
        (_member(tarfile.SYMTYPE, "a/evil", "../../etc/passwd"), "points outside"),
        (_member(tarfile.LNKTYPE, "hard", "etc/shadow"), "hard link"),
        (_member(tarfile.CHRTYPE, "dev/mem"), "device or special file"),
        (_member(tarfile.BLKTYPE, "dev/sda"), "device or special file"),
        (_member(tarfile.FIFOTYPE, "fifo"), "device or special file"),
        (_member(tarfile.REGTYPE, "manifest.json"), "appears twice"),
    ],
)
def test_member_prescan(tmp_path: Path, add: Callable[[tarfile.TarFile], None], message: str) -> None:
    with pytest.raises(ImageArchiveError, match=message):
        validate_image_archive(make_archive(tmp_path / "a.tar", extra=add))


def test_links_inside_the_archive_are_fine(tmp_path: Path) -> None:
    def add(tar: tarfile.TarFile) -> None:
        _member(tarfile.DIRTYPE, "abc")(tar)
        _member(tarfile.SYMTYPE, "abc/layer.tar", "../manifest.json")(tar)

    assert validate_image_archive(make_archive(tmp_path / "a.tar", extra=add)).user == "10001:10001"


def test_size_caps(tmp_path: Path) -> None:
    path = make_archive(tmp_path / "a.tar")
    with pytest.raises(ImageArchiveError, match="over the limit"):
        validate_image_archive(path, limits=ImageLimits(max_archive_bytes=1000))
    with pytest.raises(ImageArchiveError, match="content exceeds"):
        validate_image_archive(path, limits=ImageLimits(max_total_bytes=100))
    with pytest.raises(ImageArchiveError, match="more than 2 members"):
        validate_image_archive(path, limits=ImageLimits(max_members=2))


def test_errors_are_participant_facing_one_liners(tmp_path: Path) -> None:
    with pytest.raises(SubmissionError) as caught:
        validate_image_archive(make_archive(tmp_path / "a.tar", user="root"))
    assert "\n" not in str(caught.value)
