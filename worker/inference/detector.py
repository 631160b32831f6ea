"""One model archive applied to one image on one device: tiles -> model -> decoded, merged detections.

`Detector.start` enqueues all device work for an image (resampling to the archive's pixel spacing, tiling,
normalisation, batched forward passes in bf16 when allowed, heatmap stitching) without waiting for it;
`Detector.finish` waits, finds peaks / runs NMS on the device and returns pixel coordinates of the original
image. Calling `start` for the next image before `finish` for the current one keeps the GPU busy while the
host waits: on a GPU, `finish` runs on a second CUDA stream that waits only for its own image's forward
passes (an event), so its synchronisations do not wait for the next image's forward passes queued meanwhile.
Heatmaps are stitched from the tiles' core regions into one map per image (one gather) and peaks are found once
on that map, so a figure on a tile border is seen exactly once. Points and boxes are kept by the tile whose core,
widened by half the NMS radius, holds their centre, and a global point NMS then removes the duplicates: two tiles
that place one figure on either side of a core border (models often pull border objects inwards) would otherwise
both drop it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as nnf

from worker.archives import MANIFEST_NAME, ArchiveError, ArchiveManifest, validate_archive
from worker.inference.decode import MAX_CANDIDATES, batched_box_nms, heatmap_peaks, point_nms
from worker.inference.scripted import input_affine, load_scripted
from worker.inference.tiling import TileGrid, core_mask, cut_tiles, make_grid

SPACING_TOLERANCE = 0.01  # relative; closer spacings are used as they are, without resampling


class ModelOutputError(ValueError):
    """The model returned something the manifest does not describe; one line for the participant."""


@dataclass(frozen=True)
class Detections:
    """Detections in the original image: (n, 2) pixel centres (x = column, y = row) and (n,) scores."""

    xy_px: np.ndarray
    scores: np.ndarray
    # the case's features (the manifest's features method, averaged over channels' positions and tiles)
    features: np.ndarray | None = None


@dataclass
class Pending:
    """Device work enqueued for one image by `Detector.start`."""

    height: int
    width: int
    grid: TileGrid
    scale_x: float  # resampled px per original px
    scale_y: float
    heatmap: torch.Tensor | None = None
    raw: list[tuple[int, torch.Tensor]] = field(default_factory=list)  # (first tile index, batch output)
    ready: torch.cuda.Event | None = None  # recorded after the image's last forward pass
    feature_sum: torch.Tensor | None = None  # (C,) sum over tiles of the tile's pooled features


class Detector:
    """Loads the archive's TorchScript model once and runs it on images already on `device`."""

    def __init__(
        self,
        archive: Path,
        *,
        device: torch.device,
        batch_size: int | None = None,
        allow_bf16: bool = True,
        manifest: ArchiveManifest | None = None,
    ) -> None:
        found = manifest or validate_archive(archive)
        if not isinstance(found, ArchiveManifest):
            raise ArchiveError(f"{MANIFEST_NAME}: task: the archive is a {found.task} model, not a detector")
        self.manifest: ArchiveManifest = found
        self.device = device
        m = self.manifest
        self.batch_size = batch_size or m.batch_size or (64 if device.type == "cuda" else 8)
        self.bf16 = m.bf16 and allow_bf16 and device.type == "cuda"
        self.channels_last = device.type == "cuda"
        self.model = load_scripted(archive / m.model, device, channels_last=self.channels_last)
        if m.features_method is not None and not hasattr(self.model, m.features_method):
            raise ArchiveError(f"{MANIFEST_NAME}: features.method: the model has no {m.features_method!r}")
        self._scale, self._shift = input_affine(m.input.input_range, m.input.mean, m.input.std, device)
        self._decode_stream = torch.cuda.Stream(device) if device.type == "cuda" else None  # type: ignore[no-untyped-call]
        self._stitch_index: dict[tuple[int, int, int, int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    # -- model call ------------------------------------------------------------------------------------
    def prepare(self, tiles: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, T) uint8 tiles -> the normalised float input the model expects."""
        x = torch.addcmul(self._shift, tiles.to(torch.float32), self._scale)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def forward(self, x: torch.Tensor) -> object:
        with torch.inference_mode():
            if self.bf16:
                with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16):
                    return self.model(x)
            return self.model(x)

    def tile_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C) float32: the manifest's features method on a prepared batch, feature maps averaged over
        their positions. Anything but a finite (B, C) or (B, C, h, w) tensor is the model's error."""
        method = self.manifest.features_method
        assert method is not None
        with torch.inference_mode():
            out = getattr(self.model, method)(x)
        if not isinstance(out, torch.Tensor) or out.dim() not in (2, 4) or out.shape[0] != x.shape[0]:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ModelOutputError(f"features.method {method!r} must return (B, C) or (B, C, h, w), got {shape}")
        pooled = (out.mean(dim=(2, 3)) if out.dim() == 4 else out).float()
        if not bool(torch.isfinite(pooled).all()):
            raise ModelOutputError(f"features.method {method!r} returned values that are not finite")
        return pooled

    # -- one image -----------------------------------------------------------------------------------
    def start(self, image: torch.Tensor, spacing_mm: float) -> Pending:
        """Enqueue the work for one (3, H, W) uint8 image on the device; returns without synchronising."""
        m = self.manifest
        _, height, width = image.shape
        scale_x = scale_y = 1.0
        with torch.inference_mode():
            if m.input.spacing_mm is not None:
                factor = spacing_mm / m.input.spacing_mm
                if abs(factor - 1.0) > SPACING_TOLERANCE:
                    image = _resample(image, factor)
                    scale_y, scale_x = image.shape[1] / height, image.shape[2] / width
            grid = make_grid(image.shape[1], image.shape[2], m.input.tile_size, m.input.overlap)
            tiles = cut_tiles(image, grid)
            pending = Pending(height, width, grid, scale_x, scale_y)
            maps: list[torch.Tensor] = []
            n = grid.count
            batches = math.ceil(n / self.batch_size)
            per = math.ceil(n / batches)  # equal batches: no tiny last batch
            for first in range(0, n, per):
                x = self.prepare(tiles[first : first + per])
                out = self.forward(x)
                if m.features_method is not None:
                    pooled = self.tile_features(x).sum(dim=0)
                    pending.feature_sum = pooled if pending.feature_sum is None else pending.feature_sum + pooled
                if m.output.kind == "heatmap":
                    maps.append(self._tile_heatmaps(out))
                else:
                    pending.raw.append((first, _as_detection_tensor(out, m.output.kind)))
            if maps:
                pending.heatmap = self._stitch(torch.cat(maps), grid)
            if self._decode_stream is not None:
                pending.ready = torch.cuda.Event()  # type: ignore[no-untyped-call]
                pending.ready.record()
        return pending

    def finish(self, pending: Pending) -> Detections:
        """Wait for the image's device work and return its merged detections."""
        stream = self._decode_stream
        if stream is None or pending.ready is None:
            return self._finish(pending)
        stream.wait_event(pending.ready)
        with torch.cuda.stream(stream):
            return self._finish(pending)

    def _finish(self, pending: Pending) -> Detections:
        m = self.manifest.output
        with torch.inference_mode():
            if pending.heatmap is not None:
                xy, scores = self._heatmap_detections(pending)
            else:
                xy, scores = self._listed_detections(pending)
            keep = point_nms(xy, scores, m.nms_radius_px)
            xy, scores = xy[keep].double(), scores[keep].double()
            # back to the original image's pixel grid (align_corners=False convention of the resampling)
            xy[:, 0] = (xy[:, 0] + 0.5) / pending.scale_x - 0.5
            xy[:, 1] = (xy[:, 1] + 0.5) / pending.scale_y - 0.5
            inside = (
                (xy[:, 0] >= -0.5)
                & (xy[:, 0] < pending.width - 0.5)
                & (xy[:, 1] >= -0.5)
                & (xy[:, 1] < pending.height - 0.5)
            )
            xy, scores = xy[inside], scores[inside]
            xy[:, 0].clamp_(0, pending.width - 1)
            xy[:, 1].clamp_(0, pending.height - 1)
            order = torch.argsort(scores, descending=True, stable=True)
            features = None
            if pending.feature_sum is not None:
                features = (pending.feature_sum / pending.grid.count).double().cpu().numpy()
            return Detections(xy[order].cpu().numpy(), scores[order].cpu().numpy(), features)

    def detect(self, image: torch.Tensor, spacing_mm: float) -> Detections:
        return self.finish(self.start(image, spacing_mm))

    # -- output decoding ---------------------------------------------------------------------------
    def _tile_heatmaps(self, out: object) -> torch.Tensor:
        """A batch's model output -> (B, T/stride, T/stride) float32 probabilities."""
        m = self.manifest
        cells = m.input.tile_size // m.output.stride
        if isinstance(out, tuple | list):
            out = out[0]
        if not isinstance(out, torch.Tensor):
            raise ModelOutputError(f"model output: expected a heatmap tensor, got {type(out).__name__}")
        if out.dim() == 4:
            out = out[:, 0]
        if out.dim() != 3 or out.shape[1] != cells or out.shape[2] != cells:
            raise ModelOutputError(
                f"model output: heatmap of shape {tuple(out.shape)} does not match tile_size/stride = {cells}"
            )
        hm = out.to(torch.float32)
        return torch.sigmoid(hm) if m.output.activation == "sigmoid" else hm

    def _stitch(self, maps: torch.Tensor, grid: TileGrid) -> torch.Tensor:
        """(n_tiles, c, c) tile heatmaps -> one map of the padded image, each cell taken from the tile whose
        core holds it: one gather instead of a copy per tile."""
        s = self.manifest.output.stride
        key = (grid.rows.count, grid.cols.count, grid.rows.step // s, self.manifest.input.tile_size // s)
        index = self._stitch_index.get(key)
        if index is None:
            index = _stitch_index(*key, half=self.manifest.input.overlap // 2 // s, device=maps.device)
            self._stitch_index[key] = index
        tile, row, col = index
        return maps[tile, row, col]

    def _heatmap_detections(self, pending: Pending) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.manifest.output
        assert pending.heatmap is not None
        radius = max(1, round(out.nms_radius_px / out.stride))
        rows, cols, scores = heatmap_peaks(pending.heatmap, radius=radius, min_score=out.min_score)
        centre = (out.stride - 1) / 2  # cell (r, c) covers input pixels [r*s, (r+1)*s)
        xy = torch.stack([cols * out.stride + centre, rows * out.stride + centre], dim=1).to(torch.float32)
        return xy, scores

    def _listed_detections(self, pending: Pending) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.manifest.output
        grid = pending.grid
        # Any two reports of one figure inside the widened cores lie within the NMS radius of each other.
        margin = min(out.nms_radius_px / 2, self.manifest.input.overlap / 2)
        all_xy, all_scores = [], []
        for first, det in pending.raw:
            det = det.to(torch.float32)
            if det.shape[1] > MAX_CANDIDATES:
                top = torch.topk(det[:, :, -1], MAX_CANDIDATES, dim=1).indices
                det = torch.gather(det, 1, top[:, :, None].expand(-1, -1, det.shape[2]))
            scores = det[:, :, -1]
            valid = torch.isfinite(det).all(dim=2) & (scores >= out.min_score)
            if out.kind == "boxes":
                valid &= batched_box_nms(det[:, :, :4], scores, valid, out.iou_threshold)
                xy = torch.stack([(det[:, :, 0] + det[:, :, 2]) / 2, (det[:, :, 1] + det[:, :, 3]) / 2], dim=2)
            else:
                xy = det[:, :, :2]
            tile_index = torch.arange(first, first + det.shape[0], device=det.device)
            origins = torch.tensor(
                [grid.origin(int(t))[::-1] for t in range(first, first + det.shape[0])],
                dtype=torch.float32,
                device=det.device,
            )
            xy = xy + origins[:, None, :]
            flat_tiles = tile_index[:, None].expand_as(scores).reshape(-1)
            xy, scores, valid = xy.reshape(-1, 2), scores.reshape(-1), valid.reshape(-1)
            valid &= core_mask(xy, flat_tiles, grid, margin)
            all_xy.append(xy[valid])
            all_scores.append(scores[valid])
        if not all_xy:
            empty = torch.zeros(0, device=self.device)
            return empty.view(0, 2), empty
        return torch.cat(all_xy), torch.cat(all_scores)


def _owner(count: int, step: int, cells: int, half: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Along one axis of the stitched map: which tile owns each cell (its core holds it), and the cell's index
    inside that tile. Tile i's core covers cells [i*step + half, (i+1)*step + half); the first starts at 0
    and the last runs to the end."""
    length = (count - 1) * step + cells
    pos = torch.arange(length)
    owner = torch.div(pos - half, step, rounding_mode="floor").clamp_(0, count - 1)
    return owner, pos - owner * step


def _stitch_index(
    ny: int, nx: int, step: int, cells: int, *, half: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    row_owner, row_local = _owner(ny, step, cells, half)
    col_owner, col_local = _owner(nx, step, cells, half)
    tile = row_owner[:, None] * nx + col_owner[None, :]
    return tile.to(device), row_local[:, None].to(device), col_local[None, :].to(device)


def _resample(image: torch.Tensor, factor: float) -> torch.Tensor:
    """Resize a (3, H, W) uint8 image by `factor` (bilinear, antialiased when shrinking)."""
    _, h, w = image.shape
    size = (max(1, round(h * factor)), max(1, round(w * factor)))
    x = nnf.interpolate(
        image[None].to(torch.float32), size=size, mode="bilinear", antialias=factor < 1, align_corners=False
    )
    return x[0].round_().clamp_(0, 255).to(torch.uint8)


def _as_detection_tensor(out: object, kind: str) -> torch.Tensor:
    """Model output for points (B, N, 3: x, y, score) or boxes (B, N, 5: x1, y1, x2, y2, score), either one
    tensor or a list of per-tile (N_i, K) tensors, as a (B, N, K) tensor padded with NaN rows."""
    k = 3 if kind == "points" else 5
    if isinstance(out, torch.Tensor):
        if out.dim() != 3 or out.shape[2] != k:
            raise ModelOutputError(f"model output: expected (batch, N, {k}) for {kind}, got {tuple(out.shape)}")
        return out
    if isinstance(out, tuple | list) and all(isinstance(t, torch.Tensor) for t in out):
        tensors: list[torch.Tensor] = list(out)
        for t in tensors:
            if t.dim() != 2 or t.shape[1] != k:
                raise ModelOutputError(
                    f"model output: expected per-tile (N, {k}) tensors for {kind}, got {tuple(t.shape)}"
                )
        n = max((t.shape[0] for t in tensors), default=0)
        padded = torch.full((len(tensors), n, k), torch.nan, device=tensors[0].device if tensors else None)
        for i, t in enumerate(tensors):
            padded[i, : t.shape[0]] = t
        return padded
    raise ModelOutputError(f"model output: expected a tensor or a list of tensors for {kind}, got {type(out).__name__}")
