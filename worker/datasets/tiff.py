"""TIFF images with resolution tags: write (deterministic bytes), read the pixel spacing, decode to RGB.

Imports numpy, tifffile and (for non-TIFF images) Pillow; nothing from app or the service stack.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from worker.datasets.errors import DatasetError

TIFF_SUFFIXES = (".tif", ".tiff")
_MPP = re.compile(r"\bMPP\s*=\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)")


@dataclass(frozen=True)
class ImageInfo:
    width: int
    height: int
    spacing_mm: float | None  # mm per pixel from the resolution tags (or an Aperio MPP description)


def write_rgb_tiff(path: Path, rgb: npt.NDArray[np.uint8], spacing_mm: float) -> None:
    """Write an RGB uint8 image as an uncompressed, strip-organised TIFF whose XResolution/YResolution say
    the pixel spacing in pixels per centimetre (ResolutionUnit 3). Same array and spacing -> same bytes."""
    import tifffile

    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 array, got {rgb.dtype} {rgb.shape}")
    px_per_cm = 10.0 / spacing_mm
    tifffile.imwrite(
        path,
        rgb,
        photometric="rgb",
        resolution=(px_per_cm, px_per_cm),
        resolutionunit="CENTIMETER",
        metadata=None,
        software="midog-eval",
    )


def read_image_info(path: Path) -> ImageInfo:
    """Size and pixel spacing of an image without decoding it (TIFF tags; other formats: size only)."""
    if path.suffix.lower() not in TIFF_SUFFIXES:
        from PIL import Image

        try:
            with Image.open(path) as im:
                return ImageInfo(width=im.width, height=im.height, spacing_mm=None)
        except (OSError, ValueError) as exc:
            raise DatasetError(f"{path.name}: cannot read image ({exc})") from None
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages.first
            shape = page.shape
            height, width = int(shape[0]), int(shape[1])
            spacing = _spacing_from_tags(page)
    except (OSError, ValueError, tifffile.TiffFileError) as exc:
        raise DatasetError(f"{path.name}: cannot read TIFF ({exc})") from None
    return ImageInfo(width=width, height=height, spacing_mm=spacing)


def _spacing_from_tags(page: object) -> float | None:
    tags = page.tags  # type: ignore[attr-defined]
    description = tags.get("ImageDescription")
    if description is not None and isinstance(description.value, str):
        match = _MPP.search(description.value)
        if match and float(match.group(1)) > 0:
            return float(match.group(1)) / 1000.0
    xres = tags.get("XResolution")
    yres = tags.get("YResolution")
    unit_tag = tags.get("ResolutionUnit")
    if xres is None:
        return None
    unit = int(unit_tag.value) if unit_tag is not None else 2  # the TIFF default is inches
    mm_per_unit = {2: 25.4, 3: 10.0}.get(unit)
    if mm_per_unit is None:
        return None
    px_x = _rational(xres.value)
    px_y = _rational(yres.value) if yres is not None else px_x
    if not px_x or px_x <= 0:
        return None
    if px_y and abs(px_x - px_y) > 1e-3 * px_x:
        raise DatasetError("pixels are not square (XResolution != YResolution); give --spacing-mm")
    if unit == 2 and px_x <= 300:  # 72/96/300 dpi placeholders written by generic tools, not a microscope
        return None
    return mm_per_unit / px_x


def _rational(value: object) -> float | None:
    if isinstance(value, tuple) and len(value) == 2:
        num, den = value
        return float(num) / float(den) if den else None
    if isinstance(value, int | float):
        return float(value)
    return None


def decode_rgb(path: Path) -> npt.NDArray[np.uint8]:
    """Decode an image file to a C-contiguous HxWx3 uint8 array (grey is replicated, alpha dropped)."""
    try:
        if path.suffix.lower() in TIFF_SUFFIXES:
            import tifffile

            arr = np.asarray(tifffile.imread(path, key=0))
        else:
            from PIL import Image

            with Image.open(path) as im:
                arr = np.asarray(im.convert("RGB"))
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path.name}: cannot decode image ({exc})") from None
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] < 3:
        raise DatasetError(f"{path.name}: expected an RGB image, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise DatasetError(f"{path.name}: expected 8-bit samples, got {arr.dtype}")
    return np.ascontiguousarray(arr[:, :, :3])


def page_count(path: Path) -> int:
    """The number of pages of a (multi-page) TIFF: the patches of a classification stack."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            return len(tif.pages)
    except (OSError, ValueError, tifffile.TiffFileError) as exc:
        raise DatasetError(f"{path.name}: not a readable TIFF ({exc})") from None
