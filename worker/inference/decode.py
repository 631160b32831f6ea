"""Turning model outputs into detections on the device: heatmap peaks and exact greedy NMS, batched.

Greedy NMS (visit candidates by descending score, keep one unless a kept one conflicts with it) is computed
without a Python loop over candidates: keep_i = valid_i and not any(keep_j and conflict_ji for j ranked
before i) is iterated from keep = valid until it stops changing. After t rounds the first t candidates are
final, and the only fixed point is the greedy answer, so the result equals sequential greedy NMS exactly;
in practice conflicts form short chains and it settles in a few rounds of one batched matrix product.
"""

from __future__ import annotations

import torch
from torch.nn import functional as nnf

MAX_CANDIDATES = 4096  # per tile (boxes/points) or per image (peaks), highest scores first


def greedy_keep(conflict: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """conflict (B, N, N) bool, symmetric, candidates sorted by descending score; valid (B, N) bool.
    Returns keep (B, N) bool: the greedy NMS survivors."""
    n = conflict.shape[-1]
    if n == 0:
        return valid.clone()
    earlier = torch.ones(n, n, dtype=torch.bool, device=conflict.device).triu_(1)  # [j, i]: j ranks before i
    suppressors = (conflict & earlier & valid[:, :, None]).to(torch.float32)
    keep = valid.clone()
    for _ in range(n):
        hit = torch.bmm(keep.to(torch.float32)[:, None, :], suppressors)[:, 0, :] > 0
        new = valid & ~hit
        if torch.equal(new, keep):
            break
        keep = new
    return keep


def _sorted(scores: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    key = torch.where(valid, scores, torch.full_like(scores, -torch.inf))
    return torch.argsort(key, dim=-1, descending=True, stable=True)


def point_nms(xy: torch.Tensor, scores: torch.Tensor, radius: float) -> torch.Tensor:
    """Indices of the points (N, 2) kept by greedy NMS: no two kept points closer than `radius`."""
    if xy.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=xy.device)
    order = torch.argsort(scores, descending=True, stable=True)
    if order.numel() > MAX_CANDIDATES:
        order = order[:MAX_CANDIDATES]
    p = xy[order].to(torch.float32)
    conflict = (torch.cdist(p[None], p[None]) < radius)[0]
    valid = torch.ones(1, p.shape[0], dtype=torch.bool, device=xy.device)
    keep = greedy_keep(conflict[None], valid)[0]
    return order[keep]


def box_iou(boxes: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU within each batch entry: (B, N, 4) xyxy -> (B, N, N)."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    area = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
    iw = (torch.minimum(x2[:, :, None], x2[:, None, :]) - torch.maximum(x1[:, :, None], x1[:, None, :])).clamp(min=0)
    ih = (torch.minimum(y2[:, :, None], y2[:, None, :]) - torch.maximum(y1[:, :, None], y1[:, None, :])).clamp(min=0)
    inter = iw * ih
    union = area[:, :, None] + area[:, None, :] - inter
    return inter / union.clamp(min=torch.finfo(boxes.dtype).tiny)


def batched_box_nms(boxes: torch.Tensor, scores: torch.Tensor, valid: torch.Tensor, iou: float) -> torch.Tensor:
    """Greedy box NMS per batch entry: boxes (B, N, 4), scores/valid (B, N) -> keep (B, N)."""
    order = _sorted(scores, valid)
    b = torch.gather(boxes, 1, order[:, :, None].expand(-1, -1, 4)).to(torch.float32)
    v = torch.gather(valid, 1, order)
    keep_sorted = greedy_keep(box_iou(b) > iou, v)
    keep = torch.zeros_like(valid)
    keep.scatter_(1, order, keep_sorted)
    return keep


def heatmap_peaks(
    heatmap: torch.Tensor, *, radius: int, min_score: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Local maxima of a (H, W) heatmap within a (2r+1)^2 window that reach `min_score`.

    Returns (rows, cols, scores), at most MAX_CANDIDATES highest. Plateaus yield several equal peaks; the
    caller's point NMS removes them."""
    hm = heatmap.to(torch.float32)
    pooled = nnf.max_pool2d(hm[None, None], kernel_size=2 * radius + 1, stride=1, padding=radius)[0, 0]
    flat = hm.reshape(-1)
    idx = ((hm == pooled) & (hm >= min_score)).reshape(-1).nonzero().squeeze(1)
    scores = flat[idx]
    if idx.numel() > MAX_CANDIDATES:
        scores, top = torch.topk(scores, MAX_CANDIDATES)
        idx = idx[top]
    width = hm.shape[1]
    return torch.div(idx, width, rounding_mode="floor"), idx % width, scores
