"""Batched greedy NMS equals the sequential textbook loop; heatmap peaks; tile grid and core regions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.inference.decode import batched_box_nms, box_iou, heatmap_peaks, point_nms
from worker.inference.tiling import core_mask, cut_tiles, make_grid


def _sequential_nms(conflict: np.ndarray, order: np.ndarray) -> set[int]:
    kept: list[int] = []
    for i in order:
        if not any(conflict[i, j] for j in kept):
            kept.append(int(i))
    return set(kept)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 40), st.floats(0.5, 6.0))
def test_point_nms_equals_sequential_greedy(seed: int, n: int, radius: float) -> None:
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 20, (n, 2)).astype(np.float32)
    scores = rng.permutation(n).astype(np.float32)  # distinct: one greedy answer
    kept = set(point_nms(torch.from_numpy(xy), torch.from_numpy(scores), radius).tolist())
    d = np.hypot(xy[:, None, 0] - xy[None, :, 0], xy[:, None, 1] - xy[None, :, 1])
    assert kept == _sequential_nms(d < radius, np.argsort(-scores, kind="stable"))


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 30), st.floats(0.1, 0.9))
def test_batched_box_nms_equals_sequential_greedy_per_entry(seed: int, n: int, iou: float) -> None:
    rng = np.random.default_rng(seed)
    b = 3
    xy = rng.uniform(0, 30, (b, n, 2))
    wh = rng.uniform(2, 12, (b, n, 2))
    boxes = torch.from_numpy(np.concatenate([xy, xy + wh], axis=2)).float()
    scores = torch.from_numpy(np.stack([rng.permutation(n) for _ in range(b)])).float()
    valid = torch.from_numpy(rng.random((b, n)) < 0.8)
    keep = batched_box_nms(boxes, scores, valid, iou)
    ious = box_iou(boxes).numpy()
    for k in range(b):
        order = [i for i in np.argsort(-scores[k].numpy(), kind="stable") if valid[k, i]]
        assert set(np.flatnonzero(keep[k].numpy()).tolist()) == _sequential_nms(ious[k] > iou, np.array(order))


def test_nms_settles_on_a_long_suppression_chain() -> None:
    # Points 1 apart in a line with radius 1.5: greedy keeps every other one (a worst case for the iteration).
    xy = torch.stack([torch.arange(30, dtype=torch.float32), torch.zeros(30)], dim=1)
    scores = torch.linspace(1, 0, 30)
    assert sorted(point_nms(xy, scores, 1.5).tolist()) == list(range(0, 30, 2))


def test_heatmap_peaks_respects_window_and_floor() -> None:
    hm = torch.zeros(20, 20)
    hm[5, 5], hm[5, 7], hm[15, 15], hm[2, 18] = 0.9, 0.8, 0.7, 0.1
    rows, cols, scores = heatmap_peaks(hm, radius=2, min_score=0.2)
    assert sorted(zip(rows.tolist(), cols.tolist(), strict=True)) == [(5, 5), (15, 15)]
    assert sorted(scores.tolist()) == pytest.approx([0.7, 0.9])


@pytest.mark.parametrize(("h", "w", "tile", "overlap"), [(150, 200, 64, 16), (64, 64, 64, 8), (10, 300, 32, 0)])
def test_tiles_hold_the_image_pixels_at_their_origins(h: int, w: int, tile: int, overlap: int) -> None:
    image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8)
    grid = make_grid(h, w, tile, overlap)
    tiles = cut_tiles(image, grid)
    assert tiles.shape == (grid.count, 3, tile, tile)
    for i in range(grid.count):
        y0, x0 = grid.origin(i)
        part = image[:, y0 : y0 + tile, x0 : x0 + tile]
        assert torch.equal(tiles[i, :, : part.shape[1], : part.shape[2]], part)
    assert (grid.rows.count - 1) * grid.rows.step < max(h - overlap, 1)  # no tile lies wholly in the padding


@settings(max_examples=50, deadline=None)
@given(st.floats(0, 199.99), st.floats(0, 149.99))
def test_core_regions_partition_the_image(x: float, y: float) -> None:
    grid = make_grid(150, 200, 64, 16)
    xy = torch.tensor([[x, y]] * grid.count, dtype=torch.float64)
    covering = []
    for t in range(grid.count):
        y0, x0 = grid.origin(t)
        if x0 <= x < x0 + 64 and y0 <= y < y0 + 64:
            covering.append(t)
    owners = core_mask(xy, torch.arange(grid.count), grid).nonzero().flatten().tolist()
    assert len(owners) == 1
    assert owners[0] in covering
    oy, ox = grid.origin(owners[0])
    # away from the tile border by overlap/2, except on the image border
    assert x - ox >= 8 or ox == 0
    assert ox + 64 - x >= 8 or owners[0] % grid.cols.count == grid.cols.count - 1
    assert y - oy >= 8 or oy == 0
    assert oy + 64 - y >= 8 or owners[0] // grid.cols.count == grid.rows.count - 1
