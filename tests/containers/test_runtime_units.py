"""The container runtime's pure parts: inputs.json, first causes, decompression, engine errors, image ledger."""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
from pathlib import Path

import pytest

from worker.containers.causes import first_cause
from worker.containers.contract import input_path, inputs_document
from worker.containers.engine import decompress, engine_failure, is_gzip, release_image
from worker.containers.image_archive import ImageArchiveError
from worker.containers.image_user import ImageUser, UserResolutionError, resolve_user
from worker.sandbox import SandboxError, SandboxSpec, Scratch
from worker.sandbox.podman import PodmanBackend
from worker.sandbox.streams import LineLog


def test_inputs_json_is_what_grand_challenge_writes() -> None:
    # As in the MIDOG 2025 Track 1 reference's test/input/interf0/inputs.json.
    assert inputs_document("350.tiff", "2022") == [
        {
            "file": None,
            "image": {"name": "350.tiff"},
            "value": None,
            "interface": {
                "slug": "histopathology-region-of-interest-cropout",
                "kind": "Image",
                "super_kind": "Image",
                "relative_path": "images/histopathology-roi-cropout",
                "example_value": None,
            },
        }
    ]
    stacks = inputs_document("stack_5.tiff", "2022", "classification")
    assert stacks is not None
    assert stacks[0]["interface"]["slug"] == "stacked-histopathology-roi-cropouts"
    assert stacks[0]["interface"]["relative_path"] == "images/stacked-histopathology-roi-cropouts"
    assert input_path("stack_5.tiff", "2022", "classification").startswith(
        "/input/" + stacks[0]["interface"]["relative_path"] + "/"
    )
    assert inputs_document("001.tiff", "2021") is None


@pytest.mark.parametrize(
    ("log", "hidden_part", "open_part"),
    [
        (
            "Traceback (most recent call last):\n  File x\nModuleNotFoundError: No module named 'timm'\n",
            "ModuleNotFoundError",
            "No module named 'timm'",
        ),
        ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2 GiB", "GPU ran out", "Tried to allocate"),
        ("FileNotFoundError: [Errno 2] /opt/ml/model/w.pth", "FileNotFoundError", "/opt/ml/model/w.pth"),
        (
            "RuntimeError: Attempting to deserialize object on a CUDA device but torch.cuda.is_available() is False.",
            "needs a CUDA GPU",
            "deserialize object on a CUDA device",
        ),
    ],
)
def test_first_cause_fixed_line_and_detail(log: str, hidden_part: str, open_part: str) -> None:
    cause = first_cause(log)
    assert cause is not None
    assert hidden_part in cause.hidden
    assert open_part in cause.open
    assert open_part not in cause.hidden  # nothing the container wrote reaches the hidden line


def test_first_cause_takes_the_first_and_none_without_one() -> None:
    cause = first_cause("ModuleNotFoundError: No module named 'a'\nFileNotFoundError: b\n")
    assert cause is not None
    assert "'a'" in cause.open
    assert first_cause("all fine\n") is None


def test_hidden_lines_are_a_fixed_vocabulary() -> None:
    lines = {
        first_cause(f"ModuleNotFoundError: No module named '{name}'").hidden  # type: ignore[union-attr]
        for name in ("timm", "SECRET_CASE_42", "x" * 90)
    }
    assert len(lines) == 1


def test_user_resolution_rules() -> None:
    passwd = "root:x:0:0::/root:/bin/sh\nuser:x:999:999::/home/user:/bin/sh\n"
    group = "user:x:999:\naudio:x:29:user\nwheel:x:0:user\n"
    assert resolve_user("user", passwd, group) == ImageUser(999, 999, (29,), "/home/user", "user")
    assert resolve_user("999", passwd, group).home == "/home/user"
    assert resolve_user("4242", passwd, group) == ImageUser(4242, 4242, (), "/tmp", None)
    assert resolve_user("user:0", passwd, group).gid == 999
    with pytest.raises(UserResolutionError, match="useradd"):
        resolve_user("user", None, None)
    assert ImageUser(1, 1, (), "/home/user").writable_home == "/home/user"
    assert ImageUser(1, 1, (), "/").writable_home is None
    assert ImageUser(1, 1, (), "/opt/ml/model").writable_home is None


def test_decompress_streams_concatenated_members(tmp_path: Path) -> None:
    packed = tmp_path / "image.tar.gz"
    packed.write_bytes(gzip.compress(b"a" * 100_000) + gzip.compress(b"b" * 10))
    assert is_gzip(packed)
    out = decompress(packed, tmp_path / "image.tar")
    assert out.read_bytes() == b"a" * 100_000 + b"b" * 10
    assert not is_gzip(out)


def test_engine_errors_become_lines_that_say_what_to_do() -> None:
    damaged = engine_failure("Error: writing blob: digest mismatch: sha256:abc")
    assert isinstance(damaged, ImageArchiveError)
    assert "docker save" in str(damaged)
    assert isinstance(engine_failure("Error: no space left on device"), SandboxError)
    other = engine_failure("Error: payload does not match any of the supported image formats")
    assert isinstance(other, ImageArchiveError)
    assert "linux/amd64" in str(other)


def test_release_keeps_the_latest_images(tmp_path: Path) -> None:
    # `true` stands in for the engine: only which ids would be removed is checked.
    ledger = tmp_path / "images.json"
    assert release_image("a", ledger=ledger, keep=2, executable="true") == []
    assert release_image("b", ledger=ledger, keep=2, executable="true") == []
    assert release_image("a", ledger=ledger, keep=2, executable="true") == []
    assert release_image("c", ledger=ledger, keep=2, executable="true") == ["b"]
    assert sorted(json.loads(ledger.read_text())) == ["a", "c"]
    assert release_image("d", ledger=ledger, keep=0, executable="true") == ["d"]


def test_podman_arguments_map_the_users_and_scratch() -> None:
    spec = SandboxSpec(
        label="t",
        image="img",
        wall_seconds=1,
        uid=999,
        gid=999,
        groups=(29,),
        userns_base=1_000_000_000,
        scratch=(Scratch("/home/user", 1024),),
    )
    args = PodmanBackend(runtime_dir=Path("/nonexistent")).run_arguments(spec, "n", Path("/o"))
    assert args[args.index("--uidmap") : args.index("--uidmap") + 4] == [
        "--uidmap",
        "0:1000000000:65536",
        "--gidmap",
        "0:1000000000:65536",
    ]
    assert args[args.index("--group-add") + 1] == "29"
    assert "/home/user:rw,nosuid,nodev,size=1024,U" in args
    with pytest.raises(SandboxError):
        SandboxSpec(label="t", wall_seconds=1, uid=70000, gid=1, userns_base=1_000_000_000)
    with pytest.raises(SandboxError):
        SandboxSpec(label="t", wall_seconds=1, uid=5, gid=5, groups=(0,))


def test_line_log_cuts_per_request() -> None:
    read, write = os.pipe()
    log = LineLog(io.FileIO(read, "rb"), max_lines=3)
    with os.fdopen(write, "wb") as out:
        out.write(b"one\ntwo\n")
        out.flush()
        for _ in range(100):
            if log.mark() == 2:
                break
            subprocess.run(["sleep", "0.01"], check=True)
        mark = log.mark()
        out.write(b"three\nfour\n")
    log.wait()
    assert mark == 2
    assert log.since(mark) == ["three", "four"]
    read, write = os.pipe()
    log = LineLog(io.FileIO(read, "rb"), max_lines=3, max_line_bytes=4096)
    with os.fdopen(write, "wb") as out:
        out.write(b"a\nb\n" + b"x" * 10_000 + b"\n")
    log.wait()
    kept = log.since(0)
    # Only the last 3 lines are kept; a 10 000-byte line arrives in pieces of at most 4096 bytes.
    assert len(kept) == 3
    assert "".join(kept) == "x" * 10_000
