"""Container submissions with a model tarball: uploaded beside the image or alone with an earlier image of the
same team, checked at upload (one line naming the field), stored like the image, counted against the quota;
the refusals of a reused image name what to do."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any

from api_helpers import World
from sqlalchemy import select
from test_archive_uploads import image_tar, model_zip

from app.settings import Settings
from app.tables import Submission


def model_tarball(files: dict[str, bytes] | None = None, *, link: bool = False) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in (files or {"weights.pth": b"\x00" * 64, "config/model.yaml": b"depth: 3\n"}).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if link:
            info = tarfile.TarInfo("escape")
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/passwd"
            tar.addfile(info)
    return buffer.getvalue()


def _container_phase(world: World, *, quota: int | None = None) -> None:
    world.phase.allowed_kinds = ["predictions", "container"]
    world.phase.daily_quota = quota
    world.db.commit()


def _send(
    world: World,
    headers: dict[str, str],
    *,
    image: bytes | None = None,
    model: bytes | None = None,
    data: dict[str, str] | None = None,
    kind: str = "container",
) -> Any:
    # a text part, so that the body is multipart even without a file
    files: dict[str, tuple[str | None, bytes]] = {"description": (None, b"")}
    if image is not None:
        files["file"] = ("image.tar", image)
    if model is not None:
        files["model"] = ("model.tar.gz", model)
    return world.client.post(
        f"/api/v1/phases/{world.phase.id}/submissions",
        params={"kind": kind},
        headers=headers,
        files=files,
        data=data or {},
    )


def test_an_image_with_a_model_tarball_stores_both(world: World, settings: Settings, sent_tasks: list[Any]) -> None:
    _container_phase(world)
    team = world.register("Alpha")
    model = model_tarball()
    r = _send(world, team["headers"], image=image_tar(), model=model, data={"run_mode": "invoke"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["model_filename"] == "model.tar.gz"
    assert body["model_size_bytes"] == len(model)
    assert body["run_mode"] == "invoke"
    assert body["image_submission_id"] is None
    row = world.db.get(Submission, body["id"])
    assert row is not None
    assert row.model_path is not None
    assert (settings.storage_path / row.model_path).read_bytes() == model
    assert (settings.storage_path / row.file_path).read_bytes() == image_tar()
    import hashlib

    assert row.model_sha256 == hashlib.sha256(model).hexdigest()
    assert sent_tasks[-1][2] == "gpu"
    plain = _send(world, team["headers"], image=image_tar())
    assert plain.status_code == 409  # one active evaluation per team: the first is still queued
    world.finish(body["id"])
    plain = _send(world, team["headers"], image=image_tar())
    assert plain.status_code == 201, plain.text
    assert plain.json()["run_mode"] == "exec"  # the phase's mode
    assert plain.json()["model_sha256"] is None


def test_a_model_tarball_alone_reuses_an_earlier_image_of_the_team(
    world: World, settings: Settings, sent_tasks: list[Any]
) -> None:
    _container_phase(world, quota=2)
    team = world.register("Alpha")
    first = _send(world, team["headers"], image=image_tar())
    assert first.status_code == 201, first.text
    world.finish(first.json()["id"])
    again = _send(world, team["headers"], model=model_tarball(), data={"image_submission": str(first.json()["id"])})
    assert again.status_code == 201, again.text
    body = again.json()
    assert body["image_submission_id"] == first.json()["id"]
    assert body["sha256"] == first.json()["sha256"]
    rows = {s.id: s for s in world.db.scalars(select(Submission))}
    assert rows[body["id"]].file_path == rows[first.json()["id"]].file_path  # one stored image, run twice
    world.finish(body["id"])
    third = _send(world, team["headers"], model=model_tarball(), data={"image_submission": str(first.json()["id"])})
    assert third.status_code == 429  # a model alone is a submission: the daily quota of 2 is used


def test_reusing_an_image_is_refused_with_a_line_naming_the_field(
    world: World, settings: Settings, sent_tasks: list[Any]
) -> None:
    _container_phase(world, quota=None)
    alpha, beta = world.register("Alpha"), world.register("Beta")
    theirs = _send(world, beta["headers"], image=image_tar())
    predictions = world.submit(alpha["headers"])
    assert theirs.status_code == 201
    assert predictions.status_code == 201
    world.finish(predictions.json()["id"])
    mine = _send(world, alpha["headers"], image=image_tar())
    assert mine.status_code == 201
    world.finish(mine.json()["id"])
    cases = [
        ({"image_submission": str(theirs.json()["id"])}, f"your team has no submission {theirs.json()['id']}"),
        ({"image_submission": "999999"}, "your team has no submission 999999"),
        ({"image_submission": str(predictions.json()["id"])}, "is a predictions submission"),
        ({"image_submission": "x1"}, "the id of an earlier container submission"),
        ({"run_mode": "serve", "image_submission": str(mine.json()["id"])}, "run_mode: exec or invoke"),
    ]
    for data, line in cases:
        r = _send(world, alpha["headers"], model=model_tarball(), data=data)
        assert r.status_code == 422, (data, r.text)
        assert line in r.json()["detail"]
        assert r.json()["detail"].split(":")[0] in {"image_submission", "run_mode"}
    no_model = _send(world, alpha["headers"], data={"image_submission": str(mine.json()["id"])})
    assert no_model.status_code == 422
    assert no_model.json()["detail"].startswith("model: reusing the image")
    both = _send(world, alpha["headers"], image=image_tar(), model=model_tarball(), data={"image_submission": "1"})
    assert both.status_code == 422
    assert "not both" in both.json()["detail"]
    nothing = _send(world, alpha["headers"], model=model_tarball())
    assert nothing.status_code == 422
    assert nothing.json()["detail"].startswith("file: a container submission needs its image")
    stored = world.db.get(Submission, mine.json()["id"])
    assert stored is not None
    (settings.storage_path / stored.file_path).unlink()  # the image was purged from storage
    purged = _send(world, alpha["headers"], model=model_tarball(), data={"image_submission": str(stored.id)})
    assert purged.status_code == 422
    assert "no longer stored; upload the image again" in purged.json()["detail"]
    assert len([t for t in sent_tasks if t[0] == "evaluation.run"]) == 3  # nothing refused was queued


def test_model_tarballs_are_checked_at_upload(world: World, settings: Settings, sent_tasks: list[Any]) -> None:
    _container_phase(world)
    team = world.register("Alpha")
    for model, line in (
        (model_tarball(link=True), "model: model tarball member 'escape' is a link"),
        (model_tarball({"../up.pth": b"x"}), "'..' component"),
        (model_zip(), "model: a model tarball must be a .tar.gz"),
        (b"\x1f\x8b" + b"\x00" * 40, "not a readable .tar.gz"),
    ):
        r = _send(world, team["headers"], image=image_tar(), model=model)
        assert r.status_code == 422, r.text
        assert line in r.json()["detail"]
        assert "\n" not in r.json()["detail"]
    for field in ("run_mode", "image_submission"):
        r = world.submit(team["headers"], data={field: "exec"})
        assert r.status_code == 422
        assert r.json()["detail"].startswith(f"{field}: only container submissions")
    assert sent_tasks == []
    assert not list((settings.storage_path / "tmp").glob("upload-*"))  # refused uploads leave no file
    assert not list(Path(settings.storage_path).glob("submissions/*/*"))
