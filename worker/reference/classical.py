"""The classical reference detector: colour deconvolution + difference-of-Gaussians blob detection.

Everything is torch ops on the tile batch, so it scripts and runs through the same runtime as any model:
optical density -> haematoxylin concentration with fixed H&E stain vectors (Ruifrok & Johnston) -> average
pooling to stride 4 -> DoG tuned to mitotic-figure size (dense dark blobs a few micrometres across) ->
sigmoid(gain * (response - bias)). Its only learnt numbers, bias and threshold, are calibrated on one scanner
(worker.reference.training.calibrate_classical); the fixed stain vectors are what makes it scanner-sensitive.
"""

import math

import torch
from torch import nn
from torch.nn import functional as nnf

from worker.archives.manifest import ArchiveManifest, InputSpec, OutputSpec

STRIDE = 4
# Rows: haematoxylin, eosin, residual (DAB) optical-density vectors in R, G, B.
RUIFROK_HE = ((0.650, 0.704, 0.286), (0.072, 0.990, 0.105), (0.268, 0.570, 0.776))


def _gaussian(sigma: float) -> torch.Tensor:
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


class ClassicalDetector(nn.Module):
    """(B, 3, T, T) RGB in 0..255 -> (B, 1, T/4, T/4) blob probability."""

    unmix: torch.Tensor
    g_small: torch.Tensor
    g_large: torch.Tensor

    def __init__(
        self, *, sigma_small_px: float = 4.0, sigma_large_px: float = 10.0, bias: float = 0.3, gain: float = 12.0
    ) -> None:
        super().__init__()
        stains = torch.tensor(RUIFROK_HE, dtype=torch.float32)
        stains = stains / stains.norm(dim=1, keepdim=True)
        self.register_buffer("unmix", torch.linalg.inv(stains))  # OD (rgb) @ unmix -> concentrations
        g1, g2 = _gaussian(sigma_small_px / STRIDE), _gaussian(sigma_large_px / STRIDE)
        self.register_buffer("g_small", g1)
        self.register_buffer("g_large", g2)
        self.bias = bias
        self.gain = gain
        self.stride = STRIDE

    def _blur(self, x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        r = k.numel() // 2
        x = nnf.pad(x, (r, r, r, r), mode="replicate")
        x = nnf.conv2d(x, k.view(1, 1, 1, -1))
        return nnf.conv2d(x, k.view(1, 1, -1, 1))

    def haematoxylin(self, x: torch.Tensor) -> torch.Tensor:
        od = -torch.log10((x.clamp(0.0, 255.0) + 1.0) / 256.0)
        conc = torch.einsum("bchw,cd->bdhw", od, self.unmix)
        return conc[:, 0:1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = nnf.avg_pool2d(self.haematoxylin(x), self.stride)
        response = self._blur(h, self.g_small) - self._blur(h, self.g_large)
        return torch.sigmoid(self.gain * (response - self.bias))


def classical_manifest(*, threshold: float, spacing_mm: float, min_score: float = 0.05) -> ArchiveManifest:
    return ArchiveManifest(
        model="model.pt",
        name="reference-classical",
        input=InputSpec(512, 64, spacing_mm, "0-255", None, None),
        output=OutputSpec(
            kind="heatmap",
            threshold=threshold,
            nms_radius_px=16.0,
            stride=STRIDE,
            activation="none",
            min_score=min(min_score, threshold),
        ),
        bf16=False,
        batch_size=32,
    )
