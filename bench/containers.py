"""Container submissions: per-case overhead of exec and invoke modes, and the cost of the upload check.

Measures, in one run, each against a baseline measured in the same run:
1. exec: a reference-like image (tests/containers/reference_images.py: Debian python3, `useradd -m -r user`,
   a `pip install --user` package, inputs.json first) through ContainerRunner on a 24-case Track 1 set,
   one container per case (start, input placement, inputs.json, output check, log tail) against the same
   program run directly on the host, one process per case: the per-case overhead and the ratio;
2. invoke: the same program served once per run (GET /health, POST /invoke per case) through
   ContainerRunner, against one model load and N forward passes in one host process;
3. the upload check (worker.containers.image_archive.validate_image_archive) of a ~2 GB .tar.gz docker archive
   (random, incompressible layers of many files and a few large ones), against one bare decompression of
   the same file (`zlib`, nothing else): a ratio near 1 means one pass. Target: under 15 s here.
Never run as a timed test; needs podman, debootstrap's cached base image (built on first use) and ~5 GB
of disk under --workdir.

    .venv/bin/python bench/containers.py [--cases 24] [--archive-gb 2.0] [--workdir /var/tmp] [--archive PATH]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import zlib
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.containers.reference_images import PROGRAM, build_reference_image
from worker.containers.engine import decompress
from worker.containers.image_archive import validate_image_archive
from worker.containers.runner import ContainerRunner, ContainerSettings
from worker.runners import RunRequest
from worker.safe_delete import discard_tree


def make_set(root: Path, cases: int) -> tuple[Path, dict[str, object]]:
    (root / "images").mkdir(parents=True)
    entries, weights = [], {}
    for i in range(cases):
        name = f"{i:03d}.tiff"
        (root / "images" / name).write_bytes(b"II*\x00" + os.urandom(256 * 1024))
        entries.append({"name": name, "image": f"images/{name}", "width": 512, "height": 512, "spacing_mm": 0.00025})
        weights[name] = [[0.01 * j, 0.02 * j, 0.5] for j in range(5)]
    (root / "manifest.json").write_text(json.dumps({"format_version": 1, "name": "bench", "cases": entries}))
    return root, weights


def direct_program(workdir: Path) -> Path:
    """The image's program with its fixed paths pointed at host directories (nothing else changed)."""
    helper = workdir / "direct"
    (helper / "mitosis_helper").mkdir(parents=True)
    from tests.containers.reference_images import HELPER_PACKAGE

    (helper / "mitosis_helper" / "__init__.py").write_text(HELPER_PACKAGE["mitosis_helper/__init__.py"])
    text = PROGRAM.replace('Path("/input")', 'Path(os.environ["B_IN"])').replace(
        'Path("/output")', 'Path(os.environ["B_OUT"])'
    )
    text = text.replace('"/opt/ml/checkpoints/seen"', 'os.environ["B_OUT"] + "/seen"')
    text = text.replace(
        'WEIGHTS = ["/opt/ml/model/weights.json", "/opt/app/weights.json"]', 'WEIGHTS = [os.environ["B_W"]]'
    )
    (helper / "inference.py").write_text(text)
    return helper


def place(case_dir: Path, image: Path, name: str) -> None:
    target = case_dir / "in" / "images" / "histopathology-roi-cropout"
    target.mkdir(parents=True)
    (target / name).write_bytes(image.read_bytes())
    sockets = [{"interface": {"slug": "histopathology-region-of-interest-cropout"}}]
    (case_dir / "in" / "inputs.json").write_text(json.dumps(sockets))
    (case_dir / "out").mkdir()


def bench_direct_exec(helper: Path, test_set: Path, weights: Path, work: Path) -> float:
    started = time.perf_counter()
    for image in sorted((test_set / "images").iterdir()):
        case_dir = work / f"exec-{image.name}"
        place(case_dir, image, image.name)
        env = {**os.environ, "B_IN": str(case_dir / "in"), "B_OUT": str(case_dir / "out"), "B_W": str(weights)}
        env["HOME"] = str(case_dir / "out")
        subprocess.run([sys.executable, str(helper / "inference.py")], env=env, check=True, capture_output=True)
    return time.perf_counter() - started


def bench_direct_invoke(helper: Path, test_set: Path, weights: Path, work: Path) -> float:
    """One process: load the model once, then one forward pass per case (what invoke mode saves)."""
    images = sorted((test_set / "images").iterdir())
    for image in images:
        place(work / f"invoke-{image.name}", image, image.name)
    script = f"""
import os, sys, pathlib
sys.path.insert(0, {str(helper)!r})
os.environ["B_IN"] = os.environ["B_OUT"] = "/nonexistent"
os.environ["B_W"] = {str(weights)!r}
import inference, mitosis_helper
weights = mitosis_helper.load(inference.WEIGHTS)
for name in {[i.name for i in images]!r}:
    case = pathlib.Path({str(work)!r}) / f"invoke-{{name}}"
    inference.INPUT, inference.OUTPUT = case / "in", case / "out"
    os.environ["HOME"] = os.environ["B_OUT"] = str(case / "out")
    inference.run(weights)
"""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True)
    return time.perf_counter() - started


def bench_container(archive: Path, test_set: Path, runtime: Path, out: Path, mode: str, cases: int) -> float:
    settings = ContainerSettings(backend="podman", runtime_dir=runtime, gpu="none", cpus=2.0, keep_images=1)
    runner = ContainerRunner(settings)
    request = RunRequest(
        evaluation_id=990000 + (mode == "invoke"),
        kind="container",
        artifact=archive,
        test_set_dir=test_set,
        cases=tuple(f"{i:03d}.tiff" for i in range(cases)),
        output_dir=out,
        timeout_s=3600,
        run_mode=mode,
    )
    # Warm: the image loaded once (reused afterwards), so only the per-case work is timed.
    try:
        runner.run(request)
        started = time.perf_counter()
        runner.run(request)
        return time.perf_counter() - started
    finally:
        runner.backend.remove_image(validate_image_archive(archive).image_id)


def synthetic_archive(path: Path, gigabytes: float) -> None:
    """A docker-archive .tar.gz of ~`gigabytes` compressed: incompressible layers, many small files each."""
    target = int(gigabytes * 1024**3)
    per_layer = 256 * 1024**2
    layers: list[tuple[str, Path]] = []
    written = 0
    while written < target:
        layer_path = path.parent / f"layer-{len(layers)}.tar"
        with tarfile.open(layer_path, "w") as layer:
            for i in range(2000):  # many small files, like a Python environment
                data = os.urandom(4096)
                info = tarfile.TarInfo(f"usr/lib/python3/site-packages/pkg{len(layers)}/m{i}.py")
                info.size = len(data)
                layer.addfile(info, io.BytesIO(data))
            chunk = os.urandom(min(per_layer, target - written))
            info = tarfile.TarInfo(f"opt/app/weights-{len(layers)}.bin")
            info.size = len(chunk)
            layer.addfile(info, io.BytesIO(chunk))
            if not layers:
                for name, data in (
                    ("etc/passwd", b"user:x:999:999::/home/user:/bin/sh\n"),
                    ("etc/group", b"user:x:999:\n"),
                ):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    layer.addfile(info, io.BytesIO(data))
        written += layer_path.stat().st_size
        layers.append((hashlib.sha256(layer_path.read_bytes()).hexdigest(), layer_path))
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"User": "user"},
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{d}" for d, _ in layers]},
        }
    ).encode()
    digest = hashlib.sha256(config).hexdigest()
    manifest = [{"Config": f"{digest}.json", "RepoTags": ["bench:latest"], "Layers": [f"{d}.tar" for d, _ in layers]}]
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        info = tarfile.TarInfo(f"{digest}.json")
        info.size = len(config)
        tar.addfile(info, io.BytesIO(config))
        for layer_digest, layer_path in layers:
            tar.add(layer_path, arcname=f"{layer_digest}.tar")
            layer_path.unlink()
        data = json.dumps(manifest).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def bare_decompression(path: Path) -> float:
    started = time.perf_counter()
    inflater = zlib.decompressobj(zlib.MAX_WBITS | 16)
    with path.open("rb") as handle:
        while chunk := handle.read(4 * 1024**2):
            inflater.decompress(chunk)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=24)
    parser.add_argument("--archive-gb", type=float, default=2.0)
    parser.add_argument("--workdir", type=Path, default=Path("/var/tmp"))
    parser.add_argument("--skip-archive", action="store_true")
    parser.add_argument("--archive", type=Path, help="use (or create and keep) the synthetic .tar.gz here")
    parser.add_argument("--skip-modes", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="midog-bench-containers-", dir=args.workdir))
    try:
        if not args.skip_modes:
            test_set, weights = make_set(work / "set", args.cases)
            weights_path = work / "weights.json"
            weights_path.write_text(json.dumps(weights))
            runtime = work / "runtime"
            runtime.mkdir(mode=0o755)
            archives = {
                m: build_reference_image(work, mode=m, weights=weights, name=f"bench-{m}") for m in ("exec", "invoke")
            }
            helper = direct_program(work)
            n = args.cases
            direct_exec = bench_direct_exec(helper, test_set, weights_path, work)
            direct_invoke = bench_direct_invoke(helper, test_set, weights_path, work)
            exec_s = bench_container(archives["exec"], test_set, runtime, work / "out-exec", "exec", n)
            invoke_s = bench_container(archives["invoke"], test_set, runtime, work / "out-invoke", "invoke", n)
            # Per run, whatever the mode: the gzipped image decompressed once and checked again.
            started = time.perf_counter()
            plain = decompress(archives["exec"], work / "fixed.tar")
            validate_image_archive(plain)
            fixed = time.perf_counter() - started
            plain.unlink()
            print(f"{n} cases; per run, both modes: decompress + check the image archive {fixed:.2f} s")
            rows = (
                ("exec   direct (one process per case)", direct_exec, None),
                ("exec   container (one per case)", exec_s, direct_exec),
                (f"invoke direct (one load, {n} passes)", direct_invoke, None),
                ("invoke container (one per run)", invoke_s, direct_invoke),
            )
            for label, seconds, baseline in rows:
                line = f"{label:40s} {seconds:7.2f} s {1000 * seconds / n:7.0f} ms/case"
                if baseline is not None:
                    overhead = 1000 * (seconds - baseline) / n
                    line += f"  overhead {overhead:6.0f} ms/case  ratio {seconds / baseline:5.1f}x"
                print(line)
        if not args.skip_archive:
            archive = args.archive or work / "image.tar.gz"
            if not archive.exists():
                synthetic_archive(archive, args.archive_gb)
            size = archive.stat().st_size
            # Interleaved, best of three each: other work on the machine slows one run, not the comparison.
            bare, check = [], []
            for _ in range(3):
                bare.append(bare_decompression(archive))
                started = time.perf_counter()
                info = validate_image_archive(archive)
                check.append(time.perf_counter() - started)
            inside = info.total_bytes / 1024**3
            print(
                f"upload check of a {size / 1024**3:.2f} GB .tar.gz ({inside:.2f} GB inside, {len(info.layers)} layers)"
            )
            print(
                f"  bare decompression {min(bare):6.2f} s; check {min(check):6.2f} s (runs: "
                f"{', '.join(f'{c:.2f}' for c in check)}); ratio {min(check) / min(bare):4.2f}x (target < 15 s)"
            )
    finally:
        discard_tree(work)


if __name__ == "__main__":
    main()
