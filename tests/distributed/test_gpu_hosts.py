"""A control host and two GPU hosts (tests/distributed/cluster.py): the GPU hosts hold no database URL and
no ground truth, share no directory with the control host, fetch a set once, and their faults (a SIGKILL, a
revoked token) end in exactly one result. Scores are compared with the same predictions scored in-process."""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from tests.distributed.cluster import Cluster, GpuHost, predictions_for
from tests.services import wait_until


def _expected_f1(cluster: Cluster, seed: int) -> tuple[int, int, int]:
    """tp, fp, fn of the same predictions scored in this process by the scoring core."""
    import json
    import tempfile

    from worker.pipeline import PipelineInput, open_test_set, score_file

    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "predictions.json"
        path.write_text(json.dumps(predictions_for(cluster.ground_truth, seed)))
        inp = PipelineInput(
            evaluation_id=0,
            kind="model",
            artifact=path,
            test_set_dir=cluster.set_root,
            work_dir=Path(scratch),
            timeout_s=1,
        )
        outcome = score_file(inp, open_test_set(cluster.set_root), path)
    return outcome.tp, outcome.fp, outcome.fn


def _host_of(result: object) -> str:
    worker = str(result.provenance["runtime"]["worker"])  # type: ignore[attr-defined]
    assert worker.startswith("gpu-host "), worker
    return worker.removeprefix("gpu-host ").rsplit(":", 1)[0]


def _files_under(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*") if p.is_file() and not p.is_symlink()]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def two_hosts(cluster: Cluster) -> tuple[GpuHost, GpuHost]:
    return cluster.start_host("a"), cluster.start_host("b")


def test_model_submissions_are_scored_with_both_hosts_serving(cluster: Cluster, two_hosts: tuple[GpuHost, ...]) -> None:
    ids = cluster.submit(6, seed=100)
    statuses = cluster.wait_done(ids)
    assert set(statuses.values()) == {"succeeded"}, (statuses, cluster.diagnostics())
    results = cluster.results(ids)
    assert len(results) == 6
    for index, evaluation_id in enumerate(ids):
        row = results[evaluation_id]
        assert (row.tp, row.fp, row.fn) == _expected_f1(cluster, 100 + index)
    by_host: dict[str, list[int]] = {}
    for evaluation_id in sorted(ids, key=lambda i: cluster.evaluation(i).started_at):
        by_host.setdefault(_host_of(results[evaluation_id]), []).append(evaluation_id)
    assert set(by_host) == {"a", "b"}, by_host
    # Each host fetched the set once, on its first evaluation; every later one on the same host fetched 0
    # bytes of it (6 evaluations on 2 hosts: at least one host ran two).
    for _host, evaluations in by_host.items():
        fetched = [results[i].provenance["runtime"]["fetch"]["test_set"]["bytes_fetched"] for i in evaluations]
        assert fetched[0] == cluster.input_bytes, fetched
        assert fetched[1:] == [0] * (len(fetched) - 1), fetched
    assert max(len(e) for e in by_host.values()) >= 2
    # the GPU-seconds of each run are those the host measured (the replay sleeps SLOW_S)
    for evaluation_id in ids:
        assert cluster.evaluation(evaluation_id).gpu_seconds >= 1.5


def test_gpu_hosts_hold_no_database_url_and_no_ground_truth(cluster: Cluster, two_hosts: tuple[GpuHost, ...]) -> None:
    assert cluster.truth_hashes, "the set has ground-truth files to look for"
    for host in two_hosts:
        read = 0
        for pid in host.pids():
            try:  # a pool child may end between the listing and the read (one per job)
                environ = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
            except (ProcessLookupError, FileNotFoundError):
                continue
            read += 1
            assert "DATABASE_URL" not in environ, (host.name, pid)
            assert "postgresql" not in environ, (host.name, pid)
        assert read >= 1, host.log[-2000:]
        assert host.alive(), host.log[-2000:]
        files = _files_under(host.directory)
        blobs = [p for p in files if "blobs" in p.parts]
        assert blobs, "the cache holds the inputs it fetched"
        hashes = {_sha256(p) for p in files}
        assert not hashes & cluster.truth_hashes, f"ground truth on GPU host {host.name}"
        assert cluster.input_hashes <= {_sha256(p) for p in blobs}
        assert not any("ground-truth" in p.parts for p in files)


def test_gpu_hosts_run_under_their_own_uid_closed_out_of_the_control_data_dir(
    cluster: Cluster, two_hosts: tuple[GpuHost, ...]
) -> None:
    if not cluster.separate_uids:
        pytest.skip("GPU hosts under their own uid need root, setpriv, useradd and a system python")
    control = cluster.control_dir.stat()
    assert control.st_mode & 0o777 == 0o700
    for host in two_hosts:
        assert host.uid != control.st_uid
        owners = set()
        for pid in host.pids():
            with contextlib.suppress(FileNotFoundError):
                owners.add(os.stat(f"/proc/{pid}").st_uid)
        assert owners == {host.uid}, (host.name, owners)
        probe = subprocess.run(
            ["setpriv", f"--reuid={host.uid}", f"--regid={host.uid}", "--clear-groups", "ls", str(cluster.control_dir)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert probe.returncode != 0, probe
        assert "Permission denied" in probe.stderr, probe


def test_sigkill_of_a_host_mid_run_leaves_the_job_to_the_other_one_result(
    cluster: Cluster, two_hosts: tuple[GpuHost, ...]
) -> None:
    [evaluation_id] = cluster.submit(1, seed=300)

    def started_on() -> GpuHost | None:
        for host in two_hosts:
            if host.runner_log.exists() and any(
                line.split()[0] == str(evaluation_id) for line in host.runner_log.read_text().splitlines()
            ):
                return host
        return None

    assert wait_until(lambda: started_on() is not None, 60), cluster.diagnostics()
    victim = started_on()
    assert victim is not None
    victim.kill()
    survivor = next(h for h in two_hosts if h is not victim)
    statuses = cluster.wait_done([evaluation_id], timeout_s=180)
    assert statuses == {evaluation_id: "succeeded"}, cluster.diagnostics()
    results = cluster.results([evaluation_id])
    assert len(results) == 1
    assert _host_of(results[evaluation_id]) == survivor.name
    assert (results[evaluation_id].tp, results[evaluation_id].fp, results[evaluation_id].fn) == _expected_f1(
        cluster, 300
    )
    assert cluster.evaluation(evaluation_id).attempt >= 2
    cluster.hosts[victim.name] = cluster.start_host(victim.name)  # back for the tests after this one


def test_a_revoked_token_stops_its_host_at_once(cluster: Cluster, two_hosts: tuple[GpuHost, ...]) -> None:
    revoked = cluster.hosts["a"]
    other = cluster.hosts["b"]
    assert revoked.alive()
    assert other.alive()
    cluster.cli("admin", "revoke-token", str(revoked.token_id))
    assert wait_until(lambda: not revoked.alive(), 30), revoked.log[-3000:]
    ids = cluster.submit(3, seed=400)
    statuses = cluster.wait_done(ids)
    assert set(statuses.values()) == {"succeeded"}, cluster.diagnostics()
    assert {_host_of(r) for r in cluster.results(ids).values()} == {"b"}
    assert "runner token was refused" in revoked.log
