"""The tile grid over one image and each tile's core region, which is what makes merging duplicate-free.

Tiles of size T start every S = T - overlap pixels; the image is padded (reflected) on the bottom and right
so that the last tile fits. Along each axis, tile i owns the core [i*S + overlap/2, (i+1)*S + overlap/2),
except that the first core starts at -inf and the last ends at +inf: the cores partition the plane, so a
detection is kept by exactly the one tile whose core holds its centre, and every kept centre lies at least
overlap/2 pixels inside its tile (away from the border where models see only half an object).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Axis:
    """Tile origins along one axis of length `length`, padded to `padded`."""

    length: int
    tile: int
    step: int
    count: int

    @property
    def padded(self) -> int:
        return (self.count - 1) * self.step + self.tile

    def origins(self) -> list[int]:
        return [i * self.step for i in range(self.count)]

    def core(self, i: int) -> tuple[float, float]:
        """Core interval of tile i in image coordinates (half-open)."""
        half = (self.tile - self.step) / 2
        lo = -math.inf if i == 0 else i * self.step + half
        hi = math.inf if i == self.count - 1 else (i + 1) * self.step + half
        return lo, hi


def make_axis(length: int, tile: int, overlap: int) -> Axis:
    step = tile - overlap
    count = max(1, math.ceil((length - overlap) / step))
    return Axis(length, tile, step, count)


@dataclass(frozen=True)
class TileGrid:
    rows: Axis
    cols: Axis

    @property
    def count(self) -> int:
        return self.rows.count * self.cols.count

    def origin(self, index: int) -> tuple[int, int]:
        """(y0, x0) of tile `index` in row-major order."""
        r, c = divmod(index, self.cols.count)
        return r * self.rows.step, c * self.cols.step


def make_grid(height: int, width: int, tile: int, overlap: int) -> TileGrid:
    return TileGrid(make_axis(height, tile, overlap), make_axis(width, tile, overlap))


def _reflect_index(padded: int, length: int, device: torch.device) -> torch.Tensor:
    idx = torch.arange(padded, device=device)
    idx = torch.where(idx >= length, 2 * (length - 1) - idx, idx)
    return idx.clamp_(0, length - 1)  # images smaller than the padding repeat their last row/column


def cut_tiles(image: torch.Tensor, grid: TileGrid) -> torch.Tensor:
    """(C, H, W) image -> (N, C, T, T) tiles in row-major grid order (one gather, on the image's device)."""
    c, h, w = image.shape
    rows, cols = grid.rows, grid.cols
    if rows.padded != h or cols.padded != w:
        image = image.index_select(1, _reflect_index(rows.padded, h, image.device))
        image = image.index_select(2, _reflect_index(cols.padded, w, image.device))
    tiles = image.unfold(1, rows.tile, rows.step).unfold(2, cols.tile, cols.step)  # C, ny, nx, T, T
    return tiles.permute(1, 2, 0, 3, 4).reshape(grid.count, c, rows.tile, cols.tile)


def core_mask(xy: torch.Tensor, tile_index: torch.Tensor, grid: TileGrid, margin: float = 0.0) -> torch.Tensor:
    """For global (x, y) centres detected by tiles `tile_index`, whether each lies in its tile's core widened
    by `margin` pixels on every inner side (0: the cores partition the plane)."""
    r = torch.div(tile_index, grid.cols.count, rounding_mode="floor")
    c = tile_index - r * grid.cols.count
    keep = torch.ones(xy.shape[0], dtype=torch.bool, device=xy.device)
    for axis, pos, coord in ((grid.cols, c, xy[:, 0]), (grid.rows, r, xy[:, 1])):
        half = (axis.tile - axis.step) / 2
        lo = pos * axis.step + half - margin
        hi = lo + axis.step + 2 * margin
        keep &= ((pos == 0) | (coord >= lo)) & ((pos == axis.count - 1) | (coord < hi))
    return keep
