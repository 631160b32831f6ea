"""A control host (its object store a real S3 server) and two GPU hosts (tests/distributed/cluster.py): the GPU
hosts hold no database URL and no ground truth, share no directory with the control host, fetch a set once,
run a container submission through the product's container path, fetch again a cached blob damaged on disk,
and their faults (a SIGKILL, a revoked token) end in exactly one result. Scores are compared with the same
predictions scored in-process."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.distributed.cluster import Cluster, GpuHost, predictions_for
from tests.sandbox.images import build_image, require_backend
from tests.seaweedfs import SECRET_KEY
from tests.services import wait_until
from worker.safe_delete import discard_tree

# A participant's image: for the one case it is given (2022 layout, else 2021), the detections stored in the
# image under /app/out/<case>.json, written as the grand-challenge output file.
CONTAINER_SCRIPT = r"""#!/bin/sh
dir=/input/images/histopathology-roi-cropout
[ -d /input/images ] || dir=/input
n=0
for f in "$dir"/*.tiff; do
  n=$((n+1))
  name=$(basename "$f")
done
[ "$n" = 1 ] || exit 6
[ -f "/app/out/$name.json" ] || exit 7
cat "/app/out/$name.json" > /output/mitotic-figures.json
"""
CONTAINER_SEED = 500


def _expected_f1(cluster: Cluster, seed: int) -> tuple[int, int, int]:
    """tp, fp, fn of the same predictions scored in this process by the scoring core."""
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
    # The set's inputs came from the S3 server through presigned GETs, never through the API's file route.
    for name in by_host:
        log = cluster.hosts[name].log
        assert f"HTTP Request: GET {cluster.s3_endpoint}/" in log, log[-3000:]
        assert not any(f"/files/{digest}" in log for digest in cluster.input_hashes)
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
            assert "S3_SECRET_KEY" not in environ, (host.name, pid)
            assert SECRET_KEY not in environ, (host.name, pid)
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


@pytest.fixture(scope="module")
def container_archive(cluster: Cluster) -> Iterator[Path]:
    """A `podman save` archive of a busybox image (non-root USER) that writes predictions_for(CONTAINER_SEED)."""
    require_backend("podman")
    workdir = Path(tempfile.mkdtemp(prefix="midog-dist-image-"))
    image_id = ""
    try:
        outputs = predictions_for(cluster.ground_truth, CONTAINER_SEED)
        files = {f"app/out/{case}.json": json.dumps(value).encode() for case, value in outputs.items()}
        files["app/run.sh"] = CONTAINER_SCRIPT.encode()
        tag = build_image(
            "localhost/midog-test/distributed",
            'USER 10001:10001\nENTRYPOINT ["/bin/sh", "/app/run.sh"]\n',
            files,
            workdir,
        )
        archive = workdir / "image.tar"
        subprocess.run(["podman", "save", "-q", "-o", str(archive), tag], check=True, capture_output=True)
        image_id = subprocess.run(
            ["podman", "image", "inspect", "--format", "{{.Id}}", tag], check=True, capture_output=True, text=True
        ).stdout.strip()
        subprocess.run(["podman", "rmi", "-f", tag], check=False, capture_output=True)
        yield archive
    finally:
        # the copy a host's engine loaded (kept there for reuse) has the same id
        if image_id:
            subprocess.run(["podman", "rmi", "-f", image_id], check=False, capture_output=True)
        discard_tree(workdir)


def test_a_container_submission_is_scored_on_a_gpu_host(
    cluster: Cluster, two_hosts: tuple[GpuHost, ...], container_archive: Path
) -> None:
    evaluation_id = cluster.submit_container(container_archive)
    statuses = cluster.wait_done([evaluation_id], timeout_s=240)
    row = cluster.evaluation(evaluation_id)
    assert statuses == {evaluation_id: "succeeded"}, (
        row.error_message,
        row.error_detail[-3000:],
        cluster.diagnostics(),
    )
    result = cluster.results([evaluation_id])[evaluation_id]
    assert (result.tp, result.fp, result.fn) == _expected_f1(cluster, CONTAINER_SEED)
    runtime = result.provenance["runtime"]
    host = cluster.hosts[_host_of(result)]
    # The image came to the host through the job protocol, by SHA-256, into its cache (then loaded by podman).
    image_sha256 = _sha256(container_archive)
    assert image_sha256 in {p.name for p in _files_under(host.cache_dir / "blobs")}, runtime
    assert f"/api/v1/runner/jobs/{evaluation_id}/attempts/{row.attempt}/files/{image_sha256}" in host.log
    assert runtime["fetch"]["bytes_fetched"] >= container_archive.stat().st_size, runtime


def test_a_cached_blob_damaged_on_disk_is_fetched_again_and_the_score_is_unchanged(
    cluster: Cluster, two_hosts: tuple[GpuHost, ...]
) -> None:
    # An image of the set, damaged in every live host's cache (whichever host runs next must meet it).
    image = next(iter(sorted(cluster.set_root.glob("images/*.tiff"))))
    digest, size = _sha256(image), image.stat().st_size
    live = [host for host in cluster.hosts.values() if host.alive()]

    def cached(host: GpuHost) -> list[Path]:
        return [p for p in _files_under(host.cache_dir / "blobs") if p.name == digest]

    for attempt in range(6):  # run alone, the hosts may not all hold the set yet: evaluations until they do
        if all(cached(host) for host in live):
            break
        warm = cluster.submit(2, behaviour="replay", seed=700 + 2 * attempt)
        assert set(cluster.wait_done(warm).values()) == {"succeeded"}, cluster.diagnostics()
    damaged = []
    for host in live:
        [blob] = cached(host)
        with blob.open("r+b") as handle:  # root (or the host's uid) writes over its bytes; the size is kept
            handle.seek(size // 2)
            handle.write(b"\xde\xad\xbe\xef" * 16)
        assert _sha256(blob) != digest
        damaged.append((host, blob))
    assert damaged
    ids = cluster.submit(1, seed=600)
    statuses = cluster.wait_done(ids)
    assert set(statuses.values()) == {"succeeded"}, cluster.diagnostics()
    result = cluster.results(ids)[ids[0]]
    assert (result.tp, result.fp, result.fn) == _expected_f1(cluster, 600)
    ran_on = cluster.hosts[_host_of(result)]
    fetch = result.provenance["runtime"]["fetch"]["test_set"]
    # exactly the damaged image was fetched again; every other input of the set was a hit
    assert fetch["bytes_fetched"] == size, fetch
    assert fetch["misses"] == 1, fetch
    [blob] = [b for h, b in damaged if h is ran_on]
    assert _sha256(blob) == digest


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
