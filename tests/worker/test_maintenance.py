"""The sweeper (worker.maintenance): stale interrupted uploads, half-unpacked test sets and work directories
of finished evaluations go; anything recent, and the work of live evaluations, stays."""

from __future__ import annotations

import os
import time
from pathlib import Path

from worker.maintenance import SWEEP, sweep


def _aged(path: Path, seconds: float) -> Path:
    past = time.time() - seconds
    os.utime(path, (past, past), follow_symlinks=False)
    return path


def test_stale_leftovers_are_swept_and_live_work_is_kept(tmp_path: Path) -> None:
    storage, data = tmp_path / "storage", tmp_path / "data"
    (storage / "tmp").mkdir(parents=True)
    (storage / "test-sets" / "kept-set" / "images").mkdir(parents=True)
    (storage / "tmp" / "upload-a.part").touch()
    _aged(storage / "tmp" / "upload-a.part", 7200)
    (storage / "tmp" / "upload-b.part").touch()  # an upload streaming in right now
    incoming = storage / "test-sets" / ".incoming-x1"
    (incoming / "set" / "images").mkdir(parents=True)
    (incoming / "set" / "images" / "001.tiff").write_bytes(b"II*\x00")
    _aged(incoming, 7200)
    fresh_incoming = storage / "test-sets" / ".incoming-x2"
    fresh_incoming.mkdir()
    for evaluation_id in (1, 2, 3):
        work = data / "work" / f"evaluation-{evaluation_id}" / "attempt-1"
        work.mkdir(parents=True)
        (work / "predictions.json").write_text("{}")
        _aged(work.parent, 7200)
    (data / "work" / "evaluation-4").mkdir()  # recent: kept whatever its status
    (data / "work" / "notes").mkdir()  # not a work directory of ours: never touched
    _aged(data / "work" / "notes", 7200)
    asked: list[list[int]] = []

    def active(ids: list[int]) -> set[int]:
        asked.append(ids)
        return {2}

    report = sweep(storage_dir=storage, data_dir=data, older_than_s=3600, active=active)
    assert report.uploads == ["upload-a.part"]
    assert report.incoming == [".incoming-x1"]
    assert report.work == ["evaluation-1", "evaluation-3"]
    assert asked == [[1, 2, 3]]
    assert not (storage / "tmp" / "upload-a.part").exists()
    assert (storage / "tmp" / "upload-b.part").exists()
    assert not incoming.exists()
    assert fresh_incoming.exists()
    assert (storage / "test-sets" / "kept-set" / "images").is_dir()
    assert (data / "work" / "evaluation-2" / "attempt-1" / "predictions.json").exists()
    assert (data / "work" / "evaluation-4").exists()
    assert (data / "work" / "notes").exists()
    # A second sweep finds nothing more to do.
    again = sweep(storage_dir=storage, data_dir=data, older_than_s=3600, active=active)
    assert (again.uploads, again.incoming, again.work) == ([], [], [])


def test_the_sweep_is_on_the_beat_schedule() -> None:
    from worker.celery_app import app

    entry = app.conf.beat_schedule["maintenance.sweep"]
    assert entry["task"] == SWEEP
    assert entry["options"]["queue"] == "cpu"
    assert SWEEP in app.tasks
