"""What a GPU host reports and serves: its GPU classes from --gpu-class (repeatable) and --queues, the GPUs
nvidia-smi lists (none when it is missing or fails), its cache's bytes, cap, hits and misses, and a heartbeat
sent at once and then within the interval the API asks for."""

from __future__ import annotations

import hashlib
import stat
import threading
from pathlib import Path
from typing import Any

import pytest

from app.cli.gpu_host import classes_of
from worker.blob_cache import BlobCache
from worker.remote.host import watch_token
from worker.remote.report import cache_report, gpu_names, host_report


def test_the_classes_served_come_from_gpu_class_and_queues() -> None:
    assert classes_of([], None) == ["gpu"]
    assert classes_of(["a100", "gpu", "a100"], None) == ["a100", "gpu"]
    assert classes_of(["l4"], "gpu,gpu-a100") == ["l4", "gpu", "a100"]
    for bad in (["A100"], ["a_100"], ["x" * 33]):
        with pytest.raises(ValueError, match="--gpu-class"):
            classes_of(bad, None)
    with pytest.raises(ValueError, match="--queues"):
        classes_of([], "cpu")


def _tool(directory: Path, script: str) -> None:
    tool = directory / "nvidia-smi"
    tool.write_text("#!/bin/sh\n" + script)
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)


def test_gpus_are_what_nvidia_smi_lists_and_none_without_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert gpu_names() == []  # no nvidia-smi: a CPU host
    _tool(tmp_path, 'echo "NVIDIA H100 80GB HBM3"\necho "NVIDIA H100 80GB HBM3"\n')
    assert gpu_names() == ["NVIDIA H100 80GB HBM3", "NVIDIA H100 80GB HBM3"]
    _tool(tmp_path, "echo 'NVIDIA-SMI has failed' >&2\nexit 9\n")
    assert gpu_names() == []


def test_the_cache_report_counts_bytes_hits_and_misses(tmp_path: Path) -> None:
    data = b"a blob of the test set" * 100
    sha = hashlib.sha256(data).hexdigest()
    cache = BlobCache(tmp_path / "cache", max_bytes=10_000)
    for _ in range(2):
        with cache.job() as job:
            job.get(sha, len(data), lambda: [data])
    assert cache_report(tmp_path / "cache", 10_000) == {
        "used_bytes": len(data),
        "max_bytes": 10_000,
        "hits": 1,
        "misses": 1,
    }
    report = host_report(
        name="node-1",
        gpu_classes=["gpu"],
        gpus=[],
        cache_dir=tmp_path / "cache",
        cache_max_bytes=10_000,
        kinds=["model"],
        problems={"container": "podman is missing"},
    )
    assert report["cache"]["used_bytes"] == len(data)
    assert (report["host"], report["gpus"], report["kinds"]) == ("node-1", [], ["model"])


class _Client:
    def __init__(self, beats: int) -> None:
        self.reports: list[dict[str, Any]] = []
        self.done = threading.Event()
        self.beats = beats

    def heartbeat(self, report: dict[str, Any]) -> dict[str, Any]:
        self.reports.append(report)
        if len(self.reports) >= self.beats:
            self.done.set()
        return {"heartbeat_s": 0.05}

    def ping(self) -> dict[str, Any]:
        raise AssertionError("a host with a report sends heartbeats, not pings")


def test_the_heartbeat_goes_at_once_and_then_as_often_as_the_api_asks() -> None:
    client = _Client(beats=3)
    stop = threading.Event()
    counter = iter(range(100))
    # interval_s of an hour: only the API's shorter interval (0.05 s) can bring the later beats in time
    thread = watch_token(client, interval_s=3600.0, stop=stop, report=lambda: {"n": next(counter)})  # type: ignore[arg-type]
    try:
        assert client.done.wait(30.0), client.reports
    finally:
        stop.set()
        thread.join(10.0)
    assert [r["n"] for r in client.reports[:3]] == [0, 1, 2]
