"""Images that work like the MIDOG 2025 reference algorithms, built offline for the container tests.

Base: a Debian root file system made with `debootstrap --variant=minbase` from the machine's apt mirror,
with python3 and pip from Debian (no registry, no PyPI), imported with `podman import`. It is cached on the
machine outside the repository (MIDOG_TEST_CACHE, default /var/cache/midog-tests), keyed by the recipe and
the mirror, so reruns take seconds; a fresh machine builds it from scratch (a few minutes).
On top, as the references' Dockerfiles do: `useradd -m -r user` as USER, a tiny local package installed
with `pip install --user` (into /home/user/.local, mode 0700) that the program imports, the program and
its weights in /opt/app. The program reads /input/inputs.json first and picks its handler from the tuple
of socket slugs (Track 1 detection, Track 2 stack classification), reads its weights from /opt/ml/model
when a model tarball put them there, else from the image, and writes the grand-challenge output file.
The "model" is a lookup table (case name -> predictions), so scores are known exactly. `serve.py` is the
same program in invoke mode (GET /health, POST /invoke on 127.0.0.1:4743). Images are saved like the
references' do_save.sh: `podman save | gzip -c > image.tar.gz`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.sandbox.images import image_exists, unavailable
from worker.safe_delete import discard_tree

SUITE = "bookworm"
PACKAGES = ("python3", "python3-pip", "passwd")
RECIPE_VERSION = 1

HELPER_PACKAGE = {
    "pyproject.toml": """[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"

[project]
name = "mitosis-helper"
version = "0.1"
""",
    "mitosis_helper/__init__.py": '''"""Turns a lookup-table model into grand-challenge outputs."""
import json


def detections(weights, name):
    points = [
        {"name": "mitotic figure", "point": [x, y, 0], "probability": p} for x, y, p in weights.get(name, [])
    ]
    return {"type": "Multiple points", "points": points, "version": {"major": 1, "minor": 0}}


def classes(weights, name):
    return [{"class": c, "confidence": 0.9 if c == "atypical" else 0.1} for c in weights[name]]


def load(paths):
    for path in paths:
        try:
            with open(path) as handle:
                return json.load(handle)
        except FileNotFoundError:
            continue
    raise FileNotFoundError("no weights.json in /opt/ml/model or /opt/app")
''',
}

PROGRAM = """import json
import os
import sys
from pathlib import Path

import mitosis_helper

INPUT = Path("/input")
OUTPUT = Path("/output")
WEIGHTS = ["/opt/ml/model/weights.json", "/opt/app/weights.json"]


def interface_key():
    with open(INPUT / "inputs.json") as handle:
        inputs = json.load(handle)
    return tuple(sorted(sv["interface"]["slug"] for sv in inputs))


def track1(weights):
    (image,) = sorted((INPUT / "images/histopathology-roi-cropout").glob("*.tif*"))
    result = mitosis_helper.detections(weights, image.name)
    (OUTPUT / "mitotic-figures.json").write_text(json.dumps(result))


def track2(weights):
    (stack,) = sorted((INPUT / "images/stacked-histopathology-roi-cropouts").glob("*.tif*"))
    result = mitosis_helper.classes(weights, stack.name)
    (OUTPUT / "multiple-mitotic-figure-classification.json").write_text(json.dumps(result))


HANDLERS = {
    ("histopathology-region-of-interest-cropout",): track1,
    ("stacked-histopathology-roi-cropouts",): track2,
}


def run(weights):
    key = interface_key()
    if key not in HANDLERS:
        raise KeyError(f"Unsupported interface combination: {key}")
    print("handler", HANDLERS[key].__name__, "user", os.getuid(), "home", os.environ.get("HOME"), flush=True)
    Path(os.environ["HOME"], "last-run").write_text("ok")  # HOME is writable
    Path("/opt/ml/checkpoints/seen").write_text("ok")
    HANDLERS[key](weights)


if __name__ == "__main__":
    run(mitosis_helper.load(WEIGHTS))
    sys.exit(0)
"""

SERVER = """import http.server
import sys

import inference
import mitosis_helper

WEIGHTS = mitosis_helper.load(inference.WEIGHTS)  # loaded once, kept across requests
CALLS = []


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()

    def do_POST(self):
        if self.path != "/invoke":
            self.send_response(404)
            self.end_headers()
            return
        CALLS.append(1)
        print("invoke", len(CALLS), flush=True)
        try:
            inference.run(WEIGHTS)
        except Exception as exc:
            print(f"{type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            self.send_response(500)
        else:
            self.send_response(201)
        self.end_headers()


http.server.ThreadingHTTPServer(("127.0.0.1", 4743), Handler).serve_forever()
"""

CONTAINERFILE = """FROM {base}
ENV PYTHONUNBUFFERED=1
RUN groupadd -r user && useradd -m --no-log-init -r -g user user
USER user
WORKDIR /opt/app
COPY --chown=user:user helper /opt/app/helper
RUN python3 -m pip install --user --no-cache-dir --no-index --no-build-isolation --break-system-packages \\
    /opt/app/helper
COPY --chown=user:user inference.py serve.py weights.json /opt/app/
ENTRYPOINT {entrypoint}
"""


def cache_dir() -> Path:
    return Path(os.environ.get("MIDOG_TEST_CACHE", "/var/cache/midog-tests"))


def apt_mirror() -> str:
    """The first Debian mirror the machine's apt is configured with (deb822 or one-line sources)."""
    for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        if not path.is_file() or "disabled" in path.name:
            continue
        for line in path.read_text(errors="replace").splitlines():
            words = line.split()
            if line.startswith("URIs:") and len(words) > 1 and "security" not in words[1]:
                return words[1]
            if line.startswith("deb ") and len(words) > 2 and "security" not in words[1]:
                return words[2] if words[1].startswith("[") else words[1]
    return "http://deb.debian.org/debian"


def base_image() -> str:
    """The Debian + python3 + pip base image (built once per machine, then cached); its reference."""
    if shutil.which("debootstrap") is None:
        unavailable("debootstrap is needed to build the reference-like test images (apt-get install debootstrap)")
    mirror = apt_mirror()
    recipe = json.dumps([RECIPE_VERSION, SUITE, PACKAGES, mirror]).encode()
    key = hashlib.sha256(recipe).hexdigest()[:16]
    reference = f"localhost/midog-test/debian-python:{key}"
    if image_exists(reference):
        return reference
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    rootfs_tar = cache / f"debian-python-{key}.tar"
    if not rootfs_tar.exists():
        root = Path(tempfile.mkdtemp(prefix="midog-debootstrap-", dir="/var/tmp"))
        try:
            done = subprocess.run(
                ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(root), mirror],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0:
                raise RuntimeError(f"debootstrap failed: {done.stdout[-2000:]} {done.stderr[-2000:]}")
            partial = rootfs_tar.with_suffix(".partial")
            subprocess.run(
                [
                    "tar",
                    "--numeric-owner",
                    "-C",
                    str(root),
                    "--exclude=./dev/*",
                    "--exclude=./proc/*",
                    "-cf",
                    str(partial),
                    ".",
                ],
                check=True,
            )
            partial.replace(rootfs_tar)
        finally:
            discard_tree(root)
    subprocess.run(["podman", "import", "-q", str(rootfs_tar), reference], check=True, capture_output=True)
    return reference


def build_reference_image(
    workdir: Path, *, mode: str, weights: dict[str, object], name: str, server: str = SERVER
) -> Path:
    """A reference-like image (`mode` exec | invoke) saved as .tar.gz in `workdir`; the image is removed."""
    base = base_image()
    context = workdir / f"context-{name}"
    context.mkdir(parents=True)
    for relative, text in HELPER_PACKAGE.items():
        target = context / "helper" / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    (context / "inference.py").write_text(PROGRAM)
    (context / "serve.py").write_text(server)
    (context / "weights.json").write_text(json.dumps(weights))
    entrypoint = '["python3", "serve.py"]' if mode == "invoke" else '["python3", "inference.py"]'
    (context / "Containerfile").write_text(CONTAINERFILE.format(base=base, entrypoint=entrypoint))
    tag = f"localhost/midog-test/reference-{name}:{os.getpid()}"
    subprocess.run(
        ["podman", "build", "-q", "--runtime", "runc", "--network", "none", "-t", tag, str(context)],
        check=True,
        capture_output=True,
    )
    archive = workdir / f"{name}.tar.gz"
    try:
        with archive.open("wb") as out:
            save = subprocess.Popen(["podman", "save", tag], stdout=subprocess.PIPE)
            subprocess.run(["gzip", "-c"], stdin=save.stdout, stdout=out, check=True)
            if save.wait() != 0:
                raise RuntimeError(f"podman save {tag} failed")
    finally:
        subprocess.run(["podman", "rmi", "-f", tag], check=False, capture_output=True)
    return archive
