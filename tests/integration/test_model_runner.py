"""ModelArchiveRunner: the reference CNN run in the real bwrap sandbox, what reaches the sandbox, the one-line
failures, and the GPU worker's start-up sweep of leftover runs."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.settings import Settings, get_settings
from tests.integration.conftest import REPO_ROOT, broken_archive, require_bwrap
from tests.sandbox.images import RunProcesses
from worker.errors import SubmissionError
from worker.evaluation.io import read_predictions
from worker.evaluation.representation import read_case_features
from worker.model_runner import ModelArchiveRunner, ModelSettings, reap_leftovers
from worker.runners import RunRequest, load_runner
from worker.sandbox import SandboxError, SandboxResult, SandboxSpec


def _request(artifact: Path, test_set: Path, out: Path, cases: Sequence[str], **extra: Any) -> RunRequest:
    return RunRequest(
        evaluation_id=7,
        kind="model",
        artifact=artifact,
        test_set_dir=test_set,
        cases=tuple(cases),
        output_dir=out,
        timeout_s=extra.pop("timeout_s", 120.0),
        **extra,
    )


def _cases(test_set: Path) -> list[str]:
    return [case["name"] for case in json.loads((test_set / "manifest.json").read_text())["cases"]]


def _direct_run(archive: Path, images: Path, out: Path) -> None:
    """The runtime outside any sandbox, as an organiser would run it."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "worker.inference.run",
            "--archive",
            str(archive),
            "--images",
            str(images),
            "--output",
            str(out),
            "--device",
            "cpu",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]


# --- the real sandbox ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_shard_run_in_the_sandbox_gives_the_direct_runs_detections(
    tiny_set: Path, reference_cnn_zip: Path, reference_cnn: Path, sandbox_runtime_dir: Path, tmp_path: Path
) -> None:
    require_bwrap()
    cases = _cases(tiny_set)
    shard = cases[1:]
    runner = ModelArchiveRunner(ModelSettings(runtime_dir=sandbox_runtime_dir, cpus=2, gpu="none"))
    produced = runner.run(_request(reference_cnn_zip, tiny_set, tmp_path / "out" / "shard", shard))
    assert sorted(p.name for p in produced.iterdir()) == sorted(Path(c).with_suffix(".json").name for c in shard)
    # the reference CNN declares its features: one vector per case, written inside the sandbox beside them
    features = read_case_features(produced.parent / "features", shard)
    assert sorted(features) == sorted(shard)
    assert all(len(v) == 32 for v in features.values())
    _direct_run(reference_cnn, tiny_set, tmp_path / "direct")
    sandboxed = read_predictions(produced)  # keyed by file stem
    direct = read_predictions(tmp_path / "direct")
    stems = [Path(c).stem for c in shard]
    assert sum(len(direct[c].points) for c in stems) > 0, "the archive detected nothing: the comparison is vacuous"
    for case in stems:
        np.testing.assert_allclose(sandboxed[case].points, direct[case].points, rtol=0, atol=1e-9)
        np.testing.assert_allclose(sandboxed[case].probabilities, direct[case].probabilities, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(sandboxed[case].mitotic, direct[case].mitotic)
    assert not list((sandbox_runtime_dir / "bwrap").glob("*/*")), "the run left state behind"


@pytest.mark.slow
def test_limits_in_the_sandbox_end_with_their_line(
    tiny_set: Path, reference_cnn_zip: Path, sandbox_runtime_dir: Path, tmp_path: Path
) -> None:
    require_bwrap()
    runner = ModelArchiveRunner(ModelSettings(runtime_dir=sandbox_runtime_dir, cpus=1, gpu="none"))
    cases = _cases(tiny_set)[:1]
    # Importing torch alone takes longer than this.
    started = time.monotonic()
    with pytest.raises(SubmissionError, match="^time limit exceeded$"):
        runner.run(_request(reference_cnn_zip, tiny_set, tmp_path / "t", cases, timeout_s=1.0))
    assert time.monotonic() - started < 10
    with pytest.raises(SubmissionError, match="^memory limit exceeded$"):
        runner.run(_request(reference_cnn_zip, tiny_set, tmp_path / "m", cases, memory_bytes=96 * 1024**2))


@pytest.mark.slow
def test_a_failing_model_is_the_program_failed_in_a_hidden_phase_and_explained_in_a_public_one(
    tiny_set: Path, reference_cnn: Path, sandbox_runtime_dir: Path, tmp_path: Path
) -> None:
    require_bwrap()
    runner = ModelArchiveRunner(ModelSettings(runtime_dir=sandbox_runtime_dir, cpus=1, gpu="none"))
    broken = broken_archive(reference_cnn, tmp_path / "broken.zip")
    cases = _cases(tiny_set)[:1]
    with pytest.raises(SubmissionError, match="^the program failed$"):
        runner.run(_request(broken, tiny_set, tmp_path / "h", cases))
    with pytest.raises(SubmissionError, match="^the model archive could not be run: .*stride"):
        runner.run(_request(broken, tiny_set, tmp_path / "p", cases, hidden=False))


# --- what reaches the sandbox (a recording backend: no bwrap needed) -----------------------------------


@dataclass
class RecordingBackend:
    """Records the spec and argv and returns `result`; writes one empty detections file per listed case."""

    result: SandboxResult | None = None
    name: str = "bwrap"
    calls: list[tuple[SandboxSpec, list[str], dict[str, Any]]] = field(default_factory=list)
    reaped: list[str] = field(default_factory=list)
    archive_files: list[str] = field(default_factory=list)

    def check(self) -> None:
        return None

    def run(self, spec: SandboxSpec, argv: Sequence[str], *, output_dir: Path) -> SandboxResult:
        manifest = next(m.source for m in spec.mounts if m.target == "/input/manifest.json")
        listed = json.loads(manifest.read_text())
        self.calls.append((spec, list(argv), listed))
        archive = next(m.source for m in spec.mounts if m.target == "/archive")
        self.archive_files = sorted(p.name for p in archive.iterdir())
        if self.result is not None:
            return self.result
        out = output_dir / "predictions"
        out.mkdir(parents=True)
        for case in listed["cases"]:
            empty = {"type": "Multiple points", "version": {"major": 1, "minor": 0}, "points": []}
            (out / Path(case["name"]).with_suffix(".json").name).write_text(json.dumps(empty))
        (output_dir / "stats.json").write_text(json.dumps({"device": "cpu", "tiles_per_second": 1.0}))
        return SandboxResult(0, False, False, False, 1.0, output_dir)

    def reap(self, label: str) -> int:
        self.reaped.append(label)
        return 0

    def leftover_labels(self) -> list[str]:
        return []


def _recording_runner(recorder: RecordingBackend, **settings: Any) -> ModelArchiveRunner:
    runner = ModelArchiveRunner(ModelSettings(**settings))
    runner.backend = recorder
    return runner


def test_only_the_requested_images_and_manifest_reach_the_sandbox(
    tiny_set: Path, reference_cnn_zip: Path, tmp_path: Path
) -> None:
    backend = RecordingBackend()
    runner = _recording_runner(backend, gpu="none", memory_bytes=8 * 1024**3)
    cases = _cases(tiny_set)
    out = tmp_path / "out"
    (out / "predictions").mkdir(parents=True)
    (out / "predictions" / "stale.json").write_text("{}")  # left by an earlier attempt
    produced = runner.run(_request(reference_cnn_zip, tiny_set, out, cases[:2], memory_bytes=3 * 1024**3))
    assert sorted(p.name for p in produced.iterdir()) == sorted(Path(c).with_suffix(".json").name for c in cases[:2])
    spec, argv, listed = backend.calls[0]
    assert [case["name"] for case in listed["cases"]] == cases[:2]
    assert "ground_truth" not in json.dumps(listed)
    assert "ground-truth" not in json.dumps(listed)
    targets = {m.target: m.source for m in spec.mounts}
    assert targets["/input/images"] == tiny_set / "images"
    assert backend.archive_files == ["manifest.json", "model.pt"]  # unpacked for the run, removed after it
    assert not targets["/archive"].exists()
    for mount in spec.mounts:
        assert "ground-truth" not in mount.source.parts, mount
        assert mount.source != tiny_set, "the whole test set must never be mounted"
    assert spec.memory_bytes == 3 * 1024**3  # the phase's limit wins over the setting
    assert spec.pids >= 256
    assert spec.gpu is None
    assert argv[argv.index("--device") + 1] == "cpu"
    assert 0 < spec.wall_seconds <= 120
    assert argv[1:3] == ["-m", "worker.inference.run"]
    assert spec.label == "model-7-out"
    assert backend.reaped == ["model-7-out", "model-7-out"]


def test_the_gpu_is_passed_when_configured(
    tiny_set: Path, reference_cnn_zip: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    backend = RecordingBackend()
    runner = _recording_runner(backend, gpu="0", cache_dir=tmp_path)
    with caplog.at_level(logging.INFO, logger="worker.model_runner"):
        runner.run(_request(reference_cnn_zip, tiny_set, tmp_path / "out", _cases(tiny_set)[:1]))
    # The recorded run reports the CPU: organisers are told that the GPU did not come up in the sandbox.
    assert "GPU 0 was given but the model ran on cpu" in caplog.text
    spec, argv, _ = backend.calls[0]
    assert spec.gpu == 0
    assert spec.env["CUDA_VISIBLE_DEVICES"] == "0"
    assert argv[argv.index("--device") + 1] == "cuda"
    assert argv[argv.index("--cache") + 1] == "/cache"
    assert {m.target: m.source for m in spec.mounts}["/cache"] == tmp_path


@pytest.mark.parametrize(
    ("flags", "hidden", "line"),
    [
        ({"timed_out": True}, True, "time limit exceeded"),
        ({"memory_exceeded": True, "exit_code": 137}, True, "memory limit exceeded"),
        ({"output_exceeded": True, "exit_code": 1}, True, "output size limit exceeded"),
        ({"exit_code": 2, "stderr_tail": "error: model output: bad shape (1, 1, 9, 9)"}, True, "the program failed"),
        ({"exit_code": 1, "stderr_tail": "Traceback ...secret"}, True, "the program failed"),
        (
            {"exit_code": 2, "stderr_tail": "noise\nerror: model output: bad shape (1, 1, 9, 9)\n"},
            False,
            "the model archive could not be run: model output: bad shape (1, 1, 9, 9)",
        ),
        ({"exit_code": 3}, False, "the program exited with status 3"),
    ],
)
def test_sandbox_outcomes_become_one_participant_line(
    flags: dict[str, Any], hidden: bool, line: str, tiny_set: Path, reference_cnn_zip: Path, tmp_path: Path
) -> None:
    values: dict[str, Any] = {"exit_code": None, "timed_out": False, "memory_exceeded": False}
    values.update(output_exceeded=False, wall_seconds=1.0, output_dir=tmp_path / "out")
    values.update(flags)
    backend = RecordingBackend(result=SandboxResult(**values))
    runner = _recording_runner(backend, gpu="none")
    with pytest.raises(SubmissionError) as caught:
        runner.run(_request(reference_cnn_zip, tiny_set, tmp_path / "out", _cases(tiny_set)[:1], hidden=hidden))
    assert str(caught.value) == line


def test_an_invalid_archive_is_refused_before_the_sandbox(tiny_set: Path, tmp_path: Path) -> None:
    pickle_zip = tmp_path / "pickle.zip"
    with zipfile.ZipFile(pickle_zip, "w") as zf:
        zf.writestr("manifest.json", json.dumps({"format_version": 1, "model": "model.pt"}))
        zf.writestr("model.pt", b"\x80\x04pickle")
    backend = RecordingBackend()
    runner = _recording_runner(backend, gpu="none")
    with pytest.raises(SubmissionError, match="manifest.json"):
        runner.run(_request(pickle_zip, tiny_set, tmp_path / "out", _cases(tiny_set)[:1]))
    assert backend.calls == []


def test_model_submissions_get_this_runner_by_default() -> None:
    assert isinstance(load_runner("model", Settings(runner_model="")), ModelArchiveRunner)


# --- start-up sweep --------------------------------------------------------------------------------------

ORPHAN = """
import sys
from pathlib import Path
from worker.sandbox import BwrapBackend, SandboxSpec
backend = BwrapBackend(runtime_dir=Path(sys.argv[1]))
spec = SandboxSpec(label=sys.argv[2], wall_seconds=120)
backend.run(spec, ["/bin/sh", "-c", "echo up > /output/up; sleep 120"], output_dir=Path(sys.argv[1]) / "x")
"""


def _orphan_run(runtime_dir: Path, label: str) -> None:
    """A sandboxed run whose worker is SIGKILLed mid-run: its state stays on record, as after a crash."""
    worker = subprocess.Popen([sys.executable, "-c", ORPHAN, str(runtime_dir), label], cwd=REPO_ROOT)
    runs = runtime_dir / "bwrap" / label
    try:
        # The run's output lives in its own mount namespace: its sandbox uid's processes (under this worker, not
        # another test's) show that it runs.
        assert RunProcesses(worker.pid, SandboxSpec.uid).wait_started(60), "the sandboxed run did not start"
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    assert runs.exists()


@pytest.mark.slow
def test_a_gpu_worker_reaps_leftover_runs_at_start_up(
    sandbox_runtime_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_bwrap()
    from celery.signals import celeryd_init

    from worker import celery_app

    _orphan_run(sandbox_runtime_dir, "model-41")
    monkeypatch.setenv("MIDOG_SANDBOX_RUNTIME_DIR", str(sandbox_runtime_dir))
    monkeypatch.setenv("MIDOG_SANDBOX_BACKEND", "bwrap")
    get_settings.cache_clear()  # the worker reads its settings when it starts
    handler = celery_app._reap_leftover_sandboxes
    assert any(receiver is handler for _, receiver in celeryd_init.receivers)
    handler(options={"queues": "cpu"})  # a cpu-only worker runs no participant code and sweeps nothing
    assert (sandbox_runtime_dir / "bwrap" / "model-41").exists()
    handler(options={"queues": "gpu"})
    assert not (sandbox_runtime_dir / "bwrap" / "model-41").exists()
    assert reap_leftovers(Settings(sandbox_runtime_dir=sandbox_runtime_dir)) == 0
    get_settings.cache_clear()


@pytest.mark.slow
def test_the_start_up_sweep_can_be_turned_off(sandbox_runtime_dir: Path) -> None:
    require_bwrap()
    _orphan_run(sandbox_runtime_dir, "model-42")
    assert reap_leftovers(Settings(sandbox_runtime_dir=sandbox_runtime_dir, sandbox_reap_on_start=False)) == 0
    assert (sandbox_runtime_dir / "bwrap" / "model-42").exists()
    assert reap_leftovers(Settings(sandbox_runtime_dir=sandbox_runtime_dir)) == 1


@pytest.mark.slow
def test_the_decoded_image_cache_is_read_inside_the_sandbox(
    tiny_set: Path, reference_cnn_zip: Path, sandbox_runtime_dir: Path, tmp_path: Path
) -> None:
    """Cache entries are what the runtime reads when present: blank entries make every detection vanish."""
    require_bwrap()
    from worker.datasets.cache import DecodedImageCache
    from worker.datasets.tiff import decode_rgb

    manifest = json.loads((tiny_set / "manifest.json").read_text())
    case = manifest["cases"][0]
    cache_dir = tmp_path / "cache"
    cache = DecodedImageCache(cache_dir)
    entry = cache.path_for(case["sha256"])
    entry.parent.mkdir(parents=True)
    np.save(entry, np.full_like(decode_rgb(tiny_set / case["image"]), 255))  # a blank white slide
    for path in (cache_dir, entry.parent):
        path.chmod(0o755)
    entry.chmod(0o644)
    settings: dict[str, Any] = {"runtime_dir": sandbox_runtime_dir, "cpus": 1, "gpu": "none"}
    plain = ModelArchiveRunner(ModelSettings(**settings)).run(
        _request(reference_cnn_zip, tiny_set, tmp_path / "plain", [case["name"]])
    )
    cached = ModelArchiveRunner(ModelSettings(**settings, cache_dir=cache_dir)).run(
        _request(reference_cnn_zip, tiny_set, tmp_path / "cached", [case["name"]])
    )
    stem = Path(case["name"]).stem
    assert len(read_predictions(plain)[stem].points) > 0
    assert len(read_predictions(cached)[stem].points) == 0


def test_model_archives_may_use_another_backend_than_containers() -> None:
    blank = {"sandbox_backend": "", "model_sandbox_backend": ""}
    assert ModelSettings.from_settings(Settings(**blank)).backend == "bwrap"
    assert ModelSettings.from_settings(Settings(**{**blank, "sandbox_backend": "podman"})).backend == "podman"
    both = Settings(sandbox_backend="docker", model_sandbox_backend="bwrap")
    assert ModelSettings.from_settings(both).backend == "bwrap"
    with pytest.raises(ValueError, match="model_sandbox_backend"):
        Settings(model_sandbox_backend="lxc")


def test_a_container_backend_without_a_runtime_image_is_an_infrastructure_fault(
    tiny_set: Path, reference_cnn_zip: Path, tmp_path: Path
) -> None:
    backend = RecordingBackend(name="docker")
    runner = _recording_runner(backend, backend="docker", gpu="none")
    with pytest.raises(SandboxError, match="MIDOG_MODEL_IMAGE"):
        runner.run(_request(reference_cnn_zip, tiny_set, tmp_path / "out", _cases(tiny_set)[:1]))
    assert backend.calls == []


PROBE = """
import json, os, sys
gt = sys.argv[1]
seen = {
    "input": sorted(os.listdir("/input")),
    "images": sorted(os.listdir("/input/images")),
    "cases": [c["name"] for c in json.load(open("/input/manifest.json"))["cases"]],
    "archive": sorted(os.listdir("/archive")),
    "ground_truth_visible": os.path.exists(gt),
    "uid": os.getuid(),
}
try:
    open("/archive/planted", "w")
    seen["archive_writable"] = True
except OSError:
    seen["archive_writable"] = False
os.makedirs("/output/predictions")
json.dump(seen, open("/output/predictions/probe.json", "w"))
"""


class ProbeBackend:
    """The real bwrap backend with the runner's spec, running a probe program instead of the runtime."""

    name = "bwrap"

    def __init__(self, runtime_dir: Path, ground_truth: Path) -> None:
        from worker.sandbox import BwrapBackend

        self.real = BwrapBackend(runtime_dir=runtime_dir)
        self.ground_truth = ground_truth

    def check(self) -> None:
        self.real.check()

    def run(self, spec: SandboxSpec, argv: Sequence[str], *, output_dir: Path) -> SandboxResult:
        return self.real.run(spec, [argv[0], "-c", PROBE, str(self.ground_truth)], output_dir=output_dir)

    def reap(self, label: str) -> int:
        return self.real.reap(label)

    def leftover_labels(self) -> list[str]:
        return self.real.leftover_labels()


@pytest.mark.slow
def test_inside_the_sandbox_only_the_requested_cases_and_the_archive_are_visible(
    tiny_set: Path, reference_cnn_zip: Path, sandbox_runtime_dir: Path, tmp_path: Path
) -> None:
    require_bwrap()
    ground_truth = tiny_set / "ground-truth" / "ground-truth.json"
    assert ground_truth.is_file()  # control: it exists outside
    runner = ModelArchiveRunner(ModelSettings(runtime_dir=sandbox_runtime_dir, cpus=1, gpu="none"))
    runner.backend = ProbeBackend(sandbox_runtime_dir, ground_truth)
    cases = _cases(tiny_set)
    produced = runner.run(_request(reference_cnn_zip, tiny_set, tmp_path / "probe", cases[:1]))
    seen = json.loads((produced / "probe.json").read_text())
    assert seen["input"] == ["images", "manifest.json"]
    assert seen["cases"] == cases[:1]
    assert seen["archive"] == ["manifest.json", "model.pt"]
    assert seen["ground_truth_visible"] is False
    assert seen["archive_writable"] is False
    assert seen["uid"] != 0
