"""Rebuild the official MIDOG 2025 reference algorithms and run them, unchanged, through midog-eval.

Not a test and not run in CI (it builds two multi-GB images and needs the package mirrors): run it by hand on
a machine with podman, debootstrap and the apt and PyPI mirrors, after `make venv`:

    git clone https://github.com/DeepMicroscopy/MIDOG25_T1_reference_docker t1   # or any checkout of them
    git clone https://github.com/DeepMicroscopy/MIDOG25_T2_reference_docker t2
    .venv/bin/python bench/official_references.py --t1 t1 --t2 t2 --work /var/tmp/midog-references

What it does, as a participant would with the official templates:
1. A stand-in for `pytorch/pytorch` (no registry here): Debian trixie (debootstrap minbase) with Python, pip
   and Debian's CPU torch and torchvision system-wide, imported with `podman import`. Built once, kept.
2. Each reference's files as they are in its repository, with only the `FROM` line replaced by the stand-in,
   and random weights of its exact model where its code expects them (Track 1: the FCOS ResNeXt-101
   checkpoint in resources/; Track 2: the EfficientNet-V2-M state dict in model/), made inside the stand-in
   with the reference's own model code. `podman build`, then `podman save | gzip` as its do_save.sh does.
3. `midog-eval serve` on a fresh data directory with the podman backend, an organiser token, a bundle with
   a Track 1 and a Track 2 phase that take containers, a registered participant, and `midog-eval submit
   --wait` of each .tar.gz. It prints what the participant sees and the wall time of each submission.

Random weights give meaningless scores: the point is that the images run unchanged to a board row.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BASE_TAG = "localhost/midog-bench/pytorch-standin:trixie"
BASE_PACKAGES = (
    "python3,python3-pip,python-is-python3,python3-torch,python3-torchvision,python3-numpy,python3-pil,"
    "python3-yaml,passwd,ca-certificates"
)
PODMAN = ("podman", "--runtime", "runc")
CLI = (sys.executable, "-c", "from app.cli import main; main()")
ULIMITS = ("--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096")
# pip in the image reaches the package index through this host's TLS trust (a mirror may use its own CA).
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
TRUST = ("--volume", f"{CA_BUNDLE}:{CA_BUNDLE}:ro") if CA_BUNDLE.exists() else ()

# Random weights of each reference's exact model, written where its code reads them, made with its own code.
T1_WEIGHTS = """
import torch
from utils.model import make_fcos_model
torch.manual_seed(0)
model = make_fcos_model(backbone="resnext101_32x8d", det_thresh=0.2, patch_size=1024, weights=None)
torch.save({"state_dict": {"model." + k: v for k, v in model.state_dict().items()}}, "resources/FCOS_x101.ckpt")
"""
T2_WEIGHTS = """
import torch, timm
torch.manual_seed(0)
net = timm.create_model("efficientnetv2_m", pretrained=False)
net.classifier = torch.nn.Linear(net.classifier.in_features, 1)
torch.save({"net." + k: v for k, v in net.state_dict().items()}, "model/efficientnetv2_m_random.pth")
"""


def step(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def run(*argv: str | Path, check: bool = True, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], check=check, text=True, **kwargs)  # type: ignore[call-overload]


def image_exists(tag: str) -> bool:
    return subprocess.run([*PODMAN, "image", "exists", tag], check=False).returncode == 0


def pip_environment() -> list[str]:
    """The host's pip index settings as build-time environment, so pip in the image reaches the same mirror."""
    names = ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_CERT", "PIP_DEFAULT_TIMEOUT")
    return [f"{name}={os.environ[name]}" for name in names if os.environ.get(name)]


def build_base(work: Path) -> None:
    """The pytorch/pytorch stand-in: torch system-wide, `python` on PATH, pip allowed to install --user."""
    if image_exists(BASE_TAG):
        step(f"stand-in base {BASE_TAG} already built")
        return
    rootfs = work / "trixie-rootfs"
    if not (rootfs / "usr/bin/python3").exists():
        step("debootstrap trixie with CPU torch and torchvision (several minutes)")
        run(
            "debootstrap",
            "--variant=minbase",
            f"--include={BASE_PACKAGES}",
            "trixie",
            rootfs,
            "http://deb.debian.org/debian",
        )
    # conda's python in pytorch/pytorch is not "externally managed"; Debian's is, which would refuse --user.
    for marker in rootfs.glob("usr/lib/python3*/EXTERNALLY-MANAGED"):
        marker.unlink()
    changes = ["--change", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    for entry in pip_environment():
        changes += ["--change", f"ENV {entry}"]
    step(f"podman import -> {BASE_TAG}")
    with subprocess.Popen(["tar", "-C", str(rootfs), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE) as tar:
        run(*PODMAN, "import", *changes, "-", BASE_TAG, stdin=tar.stdout, stdout=subprocess.DEVNULL)


def checkout(source: Path, dest: Path) -> None:
    """The reference's files at HEAD, from a clone (work tree or bare) or a plain directory.

    Blobs a shallow or partial clone lacks (its sample test images) are skipped: the build does not use them.
    """
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    git_dir = source / ".git" if (source / ".git").exists() else source
    if not (git_dir / "HEAD").exists():
        shutil.copytree(source, dest, dirs_exist_ok=True)
        return
    git = ("git", "--git-dir", str(git_dir))
    names = run(*git, "ls-tree", "-r", "-z", "--name-only", "HEAD", capture_output=True).stdout.split("\0")
    for name in filter(None, names):
        blob = subprocess.run([*git, "show", f"HEAD:{name}"], capture_output=True, check=False)
        if blob.returncode != 0:
            step(f"  {name}: not in this clone, skipped")
            continue
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        (dest / name).write_bytes(blob.stdout)


def replace_from(dockerfile: Path) -> str:
    """Replace the FROM image (only it: stage name and platform stay); returns the original line."""
    text = dockerfile.read_text()
    match = re.search(r"^FROM\s+(--platform=\S+\s+)?(\S+)(.*)$", text, flags=re.MULTILINE)
    if match is None:
        raise SystemExit(f"{dockerfile}: no FROM line")
    line = f"FROM {match.group(1) or ''}{BASE_TAG}{match.group(3)}"
    dockerfile.write_text(text[: match.start()] + line + text[match.end() :])
    return match.group(0)


def make_weights(context: Path, code: str, packages: tuple[str, ...]) -> None:
    """Run `code` in the stand-in with the build context at /src (and `packages` pip-installed first)."""
    install = f"pip install --quiet --user {' '.join(packages)} && " if packages else ""
    script = f"{install}cd /src && python - <<'EOF'\n{code}\nEOF"
    env = [arg for entry in pip_environment() for arg in ("--env", entry)]
    run(
        *PODMAN,
        "run",
        "--rm",
        "--network",
        "host",
        *ULIMITS,
        *TRUST,
        *env,
        "-v",
        f"{context}:/src",
        BASE_TAG,
        "sh",
        "-c",
        script,
    )


def build_reference(name: str, source: Path, work: Path, weights: str, packages: tuple[str, ...]) -> Path:
    """Build and save one reference as its do_save.sh does; returns the .tar.gz."""
    context = work / f"build-{name}"
    checkout(source, context)
    original = replace_from(context / "Dockerfile")
    step(f"{name}: replaced `{original}` with FROM {BASE_TAG}; random weights of its model")
    make_weights(context, weights, packages)
    tag = f"localhost/midog-bench/{name}:latest"
    step(f"{name}: podman build")
    started = time.monotonic()
    run(*PODMAN, "build", "--network", "host", *ULIMITS, *TRUST, "-t", tag, context)
    step(f"{name}: built in {time.monotonic() - started:.0f} s; podman save | gzip")
    archive = work / f"{name}.tar.gz"
    with archive.open("wb") as out, subprocess.Popen([*PODMAN, "save", tag], stdout=subprocess.PIPE) as save:
        run("gzip", "-c", stdin=save.stdout, stdout=out)
    model_dir = context / "model"
    if model_dir.is_dir():
        with tarfile.open(work / f"{name}-model.tar.gz", "w:gz") as tar:
            tar.add(model_dir, arcname=".")
    step(f"{name}: {archive} ({archive.stat().st_size / 1e9:.2f} GB)")
    return archive


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serving(work: Path, env: dict[str, str]) -> Iterator[str]:
    port = free_port()
    log = (work / "serve.log").open("wb")
    process = subprocess.Popen(
        [*CLI, "serve", "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        import httpx

        for _ in range(300):
            with contextlib.suppress(httpx.HTTPError):
                workers = httpx.get(f"{base}/api/v1/health", timeout=1).json()["workers"]
                if workers and all(w["alive"] for w in workers):
                    break
            if process.poll() is not None:
                raise SystemExit(f"serve exited; see {work / 'serve.log'}")
            time.sleep(0.5)
        yield base
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()


def bundle(work: Path, detection_set: Path, stacks_set: Path) -> Path:
    phase = {
        "opens_at": "2026-01-01T00:00:00Z",
        "closes_at": "2030-01-01T00:00:00Z",
        "allowed_kinds": ["container"],
        "daily_quota": 10,
        "phase_quota": 10,
        "leaderboard_visibility": "public",
    }
    document = {
        "version": 1,
        "challenge": {"slug": "references", "title": "MIDOG 2025 references", "is_published": True},
        "test_sets": [
            {"name": "refs-detection", "path": str(detection_set)},
            {"name": "refs-stacks", "path": str(stacks_set)},
        ],
        "phases": [
            {"slug": "track1", "title": "Track 1", "test_set": "refs-detection", **phase},
            {
                "slug": "track2",
                "title": "Track 2",
                "test_set": "refs-stacks",
                "scoring_options": {"task": "classification"},
                **phase,
            },
        ],
    }
    path = work / "bundle.yaml"
    path.write_text(json.dumps(document, indent=2))  # JSON is YAML
    return path


def submit_through_product(work: Path, archives: dict[str, Path], cases: int) -> None:
    data = work / "server"
    if data.exists():
        shutil.rmtree(data)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIDOG_")}
    env.update(
        MIDOG_DATA_DIR=str(data),
        MIDOG_SANDBOX_BACKEND="podman",
        MIDOG_CONTAINER_GPU="auto",
        XDG_CONFIG_HOME=str(work / "config"),
        MIDOG_PASSWORD="reference-bench-Passw0rd!",
    )
    cli = CLI
    sets = work / "test-sets"
    detection, stacks = sets / "detection", sets / "stacks"
    if not detection.exists():
        step("synthetic test sets (detection and Track 2 stacks)")
        synth = (*cli, "dataset", "synth", "--scanners", "4", "-q", "--out")
        run(*synth, detection, "--cases-per-scanner", str(cases), cwd=REPO, env=env)
        run(
            *synth,
            stacks,
            "--task",
            "classification",
            "--domains",
            "3",
            "--stacks-per-domain",
            str(cases),
            cwd=REPO,
            env=env,
        )
    with serving(work, env) as base:
        token = run(*cli, "admin", "create-token", "--name", "references", cwd=REPO, env=env, capture_output=True)
        organiser = token.stdout.strip().splitlines()[0]
        run(*cli, "login", "--server", base, "--token", organiser, cwd=REPO, env=env)
        run(*cli, "admin", "apply", bundle(work, detection, stacks), cwd=REPO, env=env)
        run(
            *cli,
            "register",
            "--server",
            base,
            "--team",
            "Reference team",
            "--email",
            "ref@example.org",
            cwd=REPO,
            env=env,
        )
        for phase, archive in archives.items():
            step(f"submit {archive.name} to references/{phase}")
            started = time.monotonic()
            done = subprocess.run(
                [*cli, "submit", f"references/{phase}", str(archive), "--kind", "container", "--wait",
                 "--method", archive.stem],
                cwd=REPO, env=env, text=True, check=False,
            )  # fmt: skip
            step(f"{phase}: exit {done.returncode} after {time.monotonic() - started:.0f} s")
        run(*cli, "leaderboard", "references/track1", cwd=REPO, env=env, check=False)
        run(*cli, "leaderboard", "references/track2", cwd=REPO, env=env, check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--t1", type=Path, required=True, help="checkout of MIDOG25_T1_reference_docker")
    parser.add_argument("--t2", type=Path, required=True, help="checkout of MIDOG25_T2_reference_docker")
    parser.add_argument("--work", type=Path, default=Path("/var/tmp/midog-references"))
    parser.add_argument("--cases", type=int, default=1, help="cases per scanner (stacks per domain for Track 2)")
    parser.add_argument("--skip-build", action="store_true", help="reuse the saved .tar.gz files in --work")
    args = parser.parse_args()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    archives = {"track1": work / "t1.tar.gz", "track2": work / "t2.tar.gz"}
    if not args.skip_build:
        build_base(work)
        build_reference("t1", args.t1.resolve(), work, T1_WEIGHTS, ())
        build_reference("t2", args.t2.resolve(), work, T2_WEIGHTS, ("timm",))
    submit_through_product(work, archives, args.cases)


if __name__ == "__main__":
    main()
