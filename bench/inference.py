"""Model-archive inference speed: forward-only vs the whole pipeline, measured in one process.

    python bench/inference.py                                   # CPU here: small set, reference-CNN-sized model
    python bench/inference.py --model resnet18 --images 80 --size 7215x5412   # GPU: MIDOG-sized set

1. Builds an archive: `--model cnn` (the reference CNN's architecture) or `--model resnet18`, a
   RetinaNet-ResNet18-class detector: a ResNet18 body (torchvision's when it is installed, else the same
   network written in plain torch), an FPN over C3-C5 and, on P3 (stride 8), two RetinaNet-style towers of
   four 3x3 convolutions with 256 channels (classification and box/offset regression). It is not
   torchvision's RetinaNet: its output is a stride-8 heatmap that the runtime decodes, because anchors and
   per-image postprocessing are what the runtime replaces. Its heatmap adds a fixed local-darkness term to
   the (random-weight) head output, so the planted dark blobs are what it detects and the results can be
   scored; the darkness term costs one pooling.
2. Writes a synthetic set: uncompressed RGB TIFFs with resolution tags, a test-set manifest with sha256,
   the decoded cache (<sha256>.npy) and the ground truth of the planted blobs.
3. Forward-only: the model on pre-loaded, pre-normalised tiles already on the device (same batch size,
   bf16 and memory format as the pipeline): tiles/s.
4. Pipeline: `run_archive` over the whole set (decode or cached load in loader threads, pinned host buffers,
   H2D, tiling, normalisation, forward, peak finding and NMS on the device, cross-tile merge, JSON files)
   plus scoring with the scoring core, timed end to end: once from the TIFFs, once from the decoded cache.
5. Prints the device, tiles/s and `pipeline/forward` = pipeline seconds / (tiles / forward tiles/s).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import tifffile
import torch
from torch import nn
from torch.nn import functional as nnf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from worker.archives.manifest import ArchiveManifest, InputSpec, OutputSpec
from worker.datasets.cache import DecodedImageCache
from worker.inference.detector import Detector
from worker.inference.images import list_images
from worker.inference.pipeline import run_archive
from worker.inference.tiling import make_grid
from worker.reference.cnn import HeatmapCNN
from worker.reference.export import write_archive

SPACING_MM = 0.00025
BLOB_RADIUS_PX = 10  # 21 px discs: at most 2x2 stride-8 cells lie wholly inside one, all within the NMS radius
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ----------------------------------------------------------------------------------------------- models
class _Basic(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.down(x))


class _PlainResNet18(nn.Module):
    """ResNet18 (He et al.) in plain torch, for machines without torchvision."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = nn.Sequential(_Basic(64, 64, 1), _Basic(64, 64, 1))
        self.layer2 = nn.Sequential(_Basic(64, 128, 2), _Basic(128, 128, 1))
        self.layer3 = nn.Sequential(_Basic(128, 256, 2), _Basic(256, 256, 1))
        self.layer4 = nn.Sequential(_Basic(256, 512, 2), _Basic(512, 512, 1))


def _resnet18_body() -> tuple[nn.Module, str]:
    try:
        import torchvision

        return torchvision.models.resnet18(weights=None), f"torchvision {torchvision.__version__} resnet18"
    except ImportError:
        return _PlainResNet18(), "plain-torch resnet18 (torchvision not installed)"


def _tower() -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(4):
        layers += [nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class ResNet18Heatmap(nn.Module):
    """ResNet18 + FPN (P3-P5, 256 channels) + classification and regression towers on P3 -> stride-8 map."""

    def __init__(self) -> None:
        super().__init__()
        body, self.body_name = _resnet18_body()
        self.stem = nn.Sequential(body.conv1, body.bn1, nn.ReLU(inplace=True), body.maxpool, body.layer1)
        self.layer2, self.layer3, self.layer4 = body.layer2, body.layer3, body.layer4
        self.lat3, self.lat4, self.lat5 = nn.Conv2d(128, 256, 1), nn.Conv2d(256, 256, 1), nn.Conv2d(512, 256, 1)
        self.smooth3 = nn.Conv2d(256, 256, 3, padding=1)
        self.cls_tower, self.reg_tower = _tower(), _tower()
        self.cls_out, self.reg_out = nn.Conv2d(256, 1, 3, padding=1), nn.Conv2d(256, 2, 3, padding=1)
        for conv in (self.cls_out, self.reg_out):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c3 = self.layer2(self.stem(x))
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        p5 = self.lat5(c5)
        p4 = self.lat4(c4) + nnf.interpolate(p5, size=c4.shape[-2:], mode="nearest")
        p3 = self.smooth3(self.lat3(c3) + nnf.interpolate(p4, size=c3.shape[-2:], mode="nearest"))
        cls = self.cls_out(self.cls_tower(p3))
        reg = self.reg_out(self.reg_tower(p3))
        # Fixed "detector": dark blobs (ImageNet-normalised input, so darkness ~ -mean over channels).
        dark = -x.mean(dim=1, keepdim=True)
        blob = nnf.avg_pool2d(dark, 8)
        logits = 6.0 * (blob - 0.5) + cls
        return torch.cat([logits.float(), reg.float()], dim=1)


class CnnDarkness(nn.Module):
    """The reference CNN architecture with the same fixed darkness term (stride 4)."""

    def __init__(self) -> None:
        super().__init__()
        self.cnn = HeatmapCNN()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dark = nnf.avg_pool2d(-x.mean(dim=1, keepdim=True), 4)
        return 6.0 * (dark - 0.5) + 0.01 * self.cnn(x)


def build_archive(kind: str, root: Path) -> tuple[Path, str]:
    if kind == "resnet18":
        model: nn.Module = ResNet18Heatmap()
        desc, stride = f"RetinaNet-ResNet18-class heatmap model, {model.body_name} body", 8  # type: ignore[attr-defined]
    else:
        model, desc, stride = CnnDarkness(), "reference CNN architecture", 4
    manifest = ArchiveManifest(
        model="model.pt",
        name=f"bench-{kind}",
        input=InputSpec(512, 64, None, "0-1", IMAGENET_MEAN, IMAGENET_STD),
        output=OutputSpec(
            kind="heatmap", threshold=0.5, nms_radius_px=16.0, stride=stride, activation="sigmoid", min_score=0.2
        ),
        bf16=True,
        batch_size=64,
    )
    params = sum(p.numel() for p in model.parameters())
    return write_archive(root / "archive", model, manifest), f"{desc}, {params / 1e6:.2f}M parameters"


# ------------------------------------------------------------------------------------------- the image set
def _background(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    base = np.array([232, 190, 215], dtype=np.int16)
    small = rng.integers(-20, 20, size=(height // 16 + 1, width // 16 + 1, 3), dtype=np.int16)
    coarse = np.repeat(np.repeat(small, 16, axis=0), 16, axis=1)[:height, :width]
    fine = rng.integers(-8, 8, size=(height, width, 1), dtype=np.int16)
    return np.clip(base + coarse + fine, 0, 255).astype(np.uint8)


def _plant(img: np.ndarray, rng: np.random.Generator, count: int) -> np.ndarray:
    h, w = img.shape[:2]
    r = BLOB_RADIUS_PX
    centres = np.column_stack([rng.uniform(2 * r, w - 2 * r, count), rng.uniform(2 * r, h - 2 * r, count)])
    keep: list[np.ndarray] = []
    for c in centres:  # at least 4 radii apart, so that every blob is its own detection
        if all(np.hypot(*(c - k)) > 4 * r for k in keep):
            keep.append(c)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    disc = xx**2 + yy**2 <= r**2
    for cx, cy in keep:
        x0, y0 = round(cx) - r, round(cy) - r
        patch = img[y0 : y0 + 2 * r + 1, x0 : x0 + 2 * r + 1]
        patch[disc] = (60, 30, 90)
    return np.array([(round(cx), round(cy)) for cx, cy in keep], dtype=np.float64).reshape(-1, 2)


def write_set(root: Path, count: int, width: int, height: int, seed: int) -> tuple[Path, Path, dict[str, list]]:
    """TIFFs + manifest.json + decoded cache + ground truth (mm) of the planted blobs."""
    rng = np.random.default_rng(seed)
    images, cache = root / "set" / "images", root / "cache"
    images.mkdir(parents=True)
    cache.mkdir()
    base = _background(width, height, rng)
    per_cm = 10.0 / SPACING_MM

    def one(i: int) -> tuple[dict, list]:
        r = np.random.default_rng([seed, i])
        img = np.roll(base, (int(r.integers(height)), int(r.integers(width))), axis=(0, 1))
        centres = _plant(img, r, count=int(r.integers(20, 60)))
        name = f"{i + 1:03d}.tiff"
        path = images / name
        tifffile.imwrite(path, img, photometric="rgb", resolution=(per_cm, per_cm), resolutionunit="CENTIMETER")
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        entry = DecodedImageCache(cache).path_for(sha)
        entry.parent.mkdir(exist_ok=True)
        np.save(entry, img)
        entry = {
            "name": name,
            "image": f"images/{name}",
            "width": width,
            "height": height,
            "spacing_mm": SPACING_MM,
            "sha256": sha,
            "groups": {"scanner": "bench"},
        }
        return entry, [[float(x) * SPACING_MM, float(y) * SPACING_MM, 0.0] for x, y in centres]

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as ex:
        done = list(ex.map(one, range(count)))
    manifest = {"format_version": 1, "name": "bench", "cases": [e for e, _ in done], "group_dimensions": ["scanner"]}
    (root / "set" / "manifest.json").write_text(json.dumps(manifest))
    gt = {e["name"]: pts for e, pts in done}
    return root / "set", cache, gt


# ----------------------------------------------------------------------------------------------- timing
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def forward_only(detector: Detector, tiles: int, repeats: int) -> float:
    """Tiles/s of the model alone on pre-loaded, pre-normalised tiles on the device."""
    t = detector.manifest.input.tile_size
    b = detector.batch_size
    raw = torch.randint(0, 256, (b, 3, t, t), dtype=torch.uint8, device=detector.device)
    x = detector.prepare(raw)
    for _ in range(3):
        detector.forward(x)
    _sync(detector.device)
    n_batches = max(repeats, tiles // b)
    start = time.perf_counter()
    for _ in range(n_batches):
        detector.forward(x)
    _sync(detector.device)
    return n_batches * b / (time.perf_counter() - start)


def score(out: Path, gt: dict[str, list]) -> tuple[float, float]:
    """(F1, seconds) of the written results against the planted blobs, by the scoring core."""
    from worker.evaluation.io import read_predictions
    from worker.evaluation.metrics import evaluate
    from worker.evaluation.types import GroundTruth

    start = time.perf_counter()
    truth = GroundTruth(cases={k: np.asarray(v, dtype=np.float64).reshape(-1, 3) for k, v in gt.items()})
    report = evaluate(truth, read_predictions(out))
    return report.overall.f1, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=("cnn", "resnet18"), default="resnet18" if cuda else "cnn")
    p.add_argument("--images", type=int, default=80 if cuda else 3)
    p.add_argument("--size", default="7215x5412" if cuda else "1536x1024", help="WxH of each image")
    p.add_argument("--loaders", default=str(min(8, os.cpu_count() or 1)), help="loader threads; a list (4,8) runs each")
    p.add_argument("--batch-size", type=int, default=64 if cuda else 8)
    p.add_argument("--no-bf16", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="write the figures here as JSON")
    p.add_argument("--workdir", type=Path, default=None, help="where the set is written (default: a temp dir)")
    args = p.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    loaders = [int(v) for v in str(args.loaders).split(",")]
    device = torch.device("cuda" if cuda else "cpu")
    if cuda:
        torch.backends.cudnn.benchmark = True
        name = torch.cuda.get_device_name(device)
    else:
        name = f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    figures: dict[str, object] = {"device": name, "torch": torch.__version__}
    print(f"device: {name}; torch {torch.__version__}; python {platform.python_version()}", flush=True)

    with tempfile.TemporaryDirectory(prefix="bench-inference-", dir=args.workdir) as tmp:
        root = Path(tmp)
        archive, desc = build_archive(args.model, root)
        print(f"model: {desc}", flush=True)
        t0 = time.perf_counter()
        test_set, cache, gt = write_set(root, args.images, width, height, args.seed)
        print(f"set: {args.images} images of {width}x{height} written in {time.perf_counter() - t0:.1f}s", flush=True)

        t0 = time.perf_counter()
        detector = Detector(archive, device=device, batch_size=args.batch_size, allow_bf16=not args.no_bf16)
        load_s = time.perf_counter() - t0
        specs = list_images(test_set)
        # Warm-up on two images: cudnn autotuning and allocator growth are not part of a steady-state figure.
        run_archive(detector, specs[:2], root / "warmup", loaders=loaders[0])
        _sync(device)
        spec_in = detector.manifest.input
        tiles = len(specs) * make_grid(height, width, spec_in.tile_size, spec_in.overlap).count
        # Forward-only before and after the pipelines; the faster one is the baseline (the stricter ratio).
        fwd = forward_only(detector, tiles, repeats=5)

        runs = {}
        configs = [(f"tiff-{n}", None, n) for n in loaders] + [("cache", cache, loaders[0])]
        for label, cache_dir, n in configs:
            out = root / f"out-{label}"
            t0 = time.perf_counter()
            stats = run_archive(detector, specs, out, cache_dir=cache_dir, loaders=n)
            f1, score_s = score(out, gt)
            runs[label] = (stats, time.perf_counter() - t0, f1, score_s, n)
        fwd = max(fwd, forward_only(detector, tiles, repeats=5))

    fwd_s = tiles / fwd
    print(
        f"tiles: {tiles} of {detector.manifest.input.tile_size} px (overlap {detector.manifest.input.overlap}); "
        f"batch {detector.batch_size}; bf16 {detector.bf16}; channels_last {detector.channels_last}; "
        f"model load {load_s:.2f}s"
    )
    print(f"forward-only: {fwd:.1f} tiles/s ({fwd_s:.2f}s for the set)")
    figures.update(
        model=desc,
        images=args.images,
        size=[width, height],
        tiles=tiles,
        batch=detector.batch_size,
        bf16=detector.bf16,
        forward_tiles_per_s=fwd,
        forward_s=fwd_s,
    )
    for label, (stats, total_s, f1, score_s, n) in runs.items():
        ratio = total_s / fwd_s
        source = f"decoded cache, {n} loader threads" if label == "cache" else f"TIFF decode, {n} loader threads"
        print(
            f"pipeline ({source}): {total_s:.2f}s = {tiles / total_s:.1f} tiles/s "
            f"(inference {stats.seconds:.2f}s, waiting for loaders {stats.load_wait_seconds:.2f}s, "
            f"scoring {score_s:.2f}s); F1 vs planted blobs {f1:.3f}; {stats.detections} detections"
        )
        print(f"pipeline/forward ({label}): {ratio:.3f}  (target <= 1.25)")
        figures[f"pipeline_{label}"] = {
            "seconds": total_s,
            "tiles_per_s": tiles / total_s,
            "ratio": ratio,
            "f1": f1,
            "inference_s": stats.seconds,
            "load_wait_s": stats.load_wait_seconds,
            "score_s": score_s,
            "loaders": n,
        }
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
