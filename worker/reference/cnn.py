"""The reference CNN: a few convolutions producing a mitotic-figure heatmap (logits) at stride 4.

Deliberately small (about 30k parameters, under 0.2 MB as TorchScript) so it trains on two CPU cores in
minutes. It sees colour as it is, with the training scanner's mean/std normalisation and no colour
augmentation, which is exactly why it degrades on scanners that stain and image differently.
"""

import torch
from torch import nn

from worker.archives.manifest import ArchiveManifest, InputSpec, OutputSpec

STRIDE = 4


def _block(cin: int, cout: int, dilation: int = 1, stride: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]


class HeatmapCNN(nn.Module):
    """(B, 3, T, T) normalised RGB -> (B, 1, T/4, T/4) logits of "a mitotic figure is centred here"."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        w = width
        # A strided first layer: figures are 20-40 px across at 0.25 um/px, so full resolution buys little.
        self.features = nn.Sequential(
            *_block(3, w, stride=2),
            *_block(w, 2 * w),
            nn.MaxPool2d(2),
            *_block(2 * w, 2 * w),
            *_block(2 * w, 2 * w, dilation=2),
            *_block(2 * w, 2 * w, dilation=4),
        )
        self.head = nn.Conv2d(2 * w, 1, 1)
        # Start from a low prior probability so the rare positives do not have to fight a 0.5 start.
        assert self.head.bias is not None
        nn.init.constant_(self.head.bias, -4.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.head(self.features(x))
        return logits


def cnn_manifest(
    *,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    threshold: float,
    spacing_mm: float,
    tile_size: int = 512,
    overlap: int = 64,
) -> ArchiveManifest:
    return ArchiveManifest(
        model="model.pt",
        name="reference-cnn",
        input=InputSpec(tile_size, overlap, spacing_mm, "0-1", mean, std),
        output=OutputSpec(
            kind="heatmap",
            threshold=threshold,
            nms_radius_px=16.0,
            stride=STRIDE,
            activation="sigmoid",
            min_score=min(0.05, threshold),
        ),
        bf16=True,
        batch_size=32,
        features_method="features",  # the layers before the head: the representation-shift analysis reads them
    )
