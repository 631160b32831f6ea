"""Loading an archive's TorchScript model and its input scaling: shared by the detector and the classifier."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch


def load_scripted(path: Path, device: torch.device, *, channels_last: bool) -> Any:
    """The TorchScript model at `path` on `device`, in eval mode (channels-last memory when asked and possible)."""
    model = torch.jit.load(str(path), map_location=device)  # type: ignore[no-untyped-call]
    model.eval()
    if channels_last:
        with contextlib.suppress(RuntimeError, TypeError):
            model = model.to(memory_format=torch.channels_last)
    return model


def input_affine(
    input_range: str,
    mean: tuple[float, float, float] | None,
    std: tuple[float, float, float] | None,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift), each (1, 3, 1, 1), so that pixel * scale + shift applies the manifest's range scaling
    ("0-1": / 255) and normalisation ((x - mean) / std)."""
    k = 1.0 / 255.0 if input_range == "0-1" else 1.0
    m = torch.tensor(mean or (0.0, 0.0, 0.0), dtype=torch.float32)
    s = torch.tensor(std or (1.0, 1.0, 1.0), dtype=torch.float32)
    return (k / s).view(1, 3, 1, 1).to(device), (-m / s).view(1, 3, 1, 1).to(device)
