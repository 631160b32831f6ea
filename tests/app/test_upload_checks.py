"""Uploads checked off the request path (U9, U11): the same refusals in the child process as inline, a case
given twice refused by name, a hostile file refused without the API growing, and a check that runs out of its
CPU or memory budget refused with a 422 that says so."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import time
from collections.abc import Iterator
from typing import Any

import pytest
from api_helpers import World, predictions
from sqlalchemy import select
from test_submissions import BAD_FILES

from app.settings import Settings
from app.tables import Submission


@pytest.fixture
def in_child(settings: Settings) -> Iterator[Settings]:
    """Every predictions file goes to the checking child process, however small."""
    settings.inline_check_bytes = 0
    return settings


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_the_child_refuses_what_the_inline_check_refuses(world: World, in_child: Settings, case: str) -> None:
    content, expected = BAD_FILES[case]
    team = world.register("Alpha")
    r = world.submit(team["headers"], content, filename="preds.json")
    assert r.status_code == 422, r.text
    assert expected in r.json()["detail"]
    assert str(in_child.storage_path) not in r.json()["detail"]
    assert world.db.scalar(select(Submission.id)) is None


@pytest.mark.parametrize("where", ["inline", "child"])
def test_a_case_given_twice_is_refused_by_name(world: World, settings: Settings, where: str) -> None:
    settings.inline_check_bytes = 10**9 if where == "inline" else 0
    team = world.register("Alpha")
    one = '{"type": "Multiple points", "points": []}'
    content = f'{{"001.tiff": {one}, "002.tiff": {one}, "003.tiff": {one}, "001.tiff": {one}}}'.encode()
    r = world.submit(team["headers"], content)
    assert r.status_code == 422
    assert "'001.tiff'" in r.json()["detail"]
    assert "twice" in r.json()["detail"]


def test_a_valid_file_passes_the_child_and_is_accepted(world: World, in_child: Settings) -> None:
    team = world.register("Alpha")
    assert world.submit(team["headers"], predictions()).status_code == 201


def test_millions_of_keys_stop_at_the_first_entry(world: World, in_child: Settings) -> None:
    team = world.register("Alpha")
    content = ("{" + ",".join(f'"k{i}":0' for i in range(500_000)) + "}").encode()
    started = time.monotonic()
    r = world.submit(team["headers"], content)
    assert r.status_code == 422
    assert "'k0'" in r.json()["detail"]
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("where", ["first", "last"])
def test_nesting_deeper_than_the_limit_is_refused_wherever_it_is(world: World, in_child: Settings, where: str) -> None:
    team = world.register("Alpha")
    deep = "[" * 40 + "]" * 40
    one = '{"type": "Multiple points", "points": []}'
    entries = [f'"001.tiff": {{"type": "Multiple points", "points": [], "extra": {deep}}}', f'"002.tiff": {one}']
    if where == "last":
        entries.reverse()
    r = world.submit(team["headers"], ("{" + ",".join(entries) + "}").encode())
    assert r.status_code == 422
    assert "nested too deeply (more than 16 levels)" in r.json()["detail"]


def _gzip_members_of_zeros(members: int, each: int) -> bytes:
    """Concatenated gzip members, each of `each` zero bytes: a small file that decompresses to a lot."""
    zeros = gzip.compress(b"\0" * each, compresslevel=9)
    return zeros * members


def _container_of_zeros(uncompressed_mib: int) -> bytes:
    """A tar.gz that starts as a real tar member, then goes on with gzip members of zeros."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo("layer.tar")
        info.size = uncompressed_mib * 2**20
        tar.addfile(info, io.BytesIO(b"\0" * info.size))
    head = gzip.compress(raw.getvalue()[:1024])
    return head + _gzip_members_of_zeros(uncompressed_mib, 2**20)


def test_a_decompression_that_outruns_the_cpu_budget_is_refused(world: World, settings: Settings) -> None:
    settings.check_cpu_seconds = 1
    world.phase.allowed_kinds = ["predictions", "container"]
    world.db.commit()
    team = world.register("Alpha")
    content = _container_of_zeros(uncompressed_mib=4000)  # the size field of a ustar header holds < 8 GiB
    started = time.monotonic()
    r = world.submit(team["headers"], content, kind="container", filename="image.tar.gz")
    elapsed = time.monotonic() - started
    # Refused by the CPU budget here; a faster machine may decompress past the image's content limit first:
    # either is the refusal this test asserts, with its bound.
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert "CPU budget of 1 s" in detail or "content exceeds" in detail, detail
    assert elapsed < 60  # the child is killed after twice its CPU budget in wall time
    assert world.db.scalar(select(Submission.id)) is None


def test_a_check_that_needs_more_memory_than_its_budget_is_refused(world: World, settings: Settings) -> None:
    settings.inline_check_bytes = 0
    settings.check_memory_bytes = 200 * 2**20
    team = world.register("Alpha")
    # One case of 700,000 points: its objects alone take more than the 200 MiB this check may use.
    big_case: dict[str, Any] = {"type": "Multiple points", "points": [{"point": [0.05, 0.05, 0]}] * 700_000}
    empty: dict[str, Any] = {"type": "Multiple points", "points": []}
    settings.max_points_per_case = 10**6
    content = json.dumps({"001.tiff": big_case, "002.tiff": empty, "003.tiff": empty}).encode()
    r = world.submit(team["headers"], content)
    assert r.status_code == 422, r.text
    assert "needs more memory to check than the server allows (200 MiB)" in r.json()["detail"]
