"""Synthetic multi-scanner MIDOG-style test sets: H&E-like images with a real domain shift between scanners.

Model. Each case is first drawn as tissue in *stain-concentration space* (haematoxylin H and eosin E per pixel,
in physical units: micrometres are converted to pixels with the scanner's spacing), then *scanned*:

- tissue: textured eosin stroma (low-frequency density, fibres of varying orientation, fine grain), holes,
  tumour-cell nuclei (varied size, shape, chromatin texture, nucleoli), spindle-shaped stromal nuclei and small
  round lymphocytes;
- mitotic figures (the ground truth, category 1): dense, irregular, very dark chromatin clumps made of many
  elongated chromosome blobs (prophase clumps, metaphase plates, anaphase/telophase pairs) in a clear halo;
- imposters (category 2 in MIDOG.json, not in the official ground truth): look-alikes that are rounder,
  smoother and paler: pyknotic/apoptotic nuclei (often with hyper-eosinophilic cytoplasm), apoptotic fragments
  and hyperchromatic interphase nuclei;
- the scanner (`ScannerProfile`): its own stain colour vectors and staining strength (Beer-Lambert optical
  density -> transmitted light), white balance, optical blur, sensor noise, tone curve (gamma, contrast,
  brightness), JPEG compression and pixel spacing.

Everything is vectorised with numpy/scipy.ndimage; per-object work touches only a small patch. Randomness comes
from one generator per case seeded with (seed, scanner index, case index), so a case does not depend on how
many other cases or scanners a set has, nor on the number of worker processes: same seed -> same bytes.

Public API: `generate_test_set` (writes a test set), `render_case` (one image and its cell centres in memory,
for training data), `scanner_profile` / `ScannerProfile`. Imports numpy, scipy, Pillow, tifffile; never torch.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
from scipy import ndimage as ndi

from worker.datasets.manifest import (
    IMAGES_DIR,
    MITOTIC_FIGURE,
    NOT_MITOTIC_FIGURE,
    PREVIEW_NAME,
    Case,
    Manifest,
    TestSet,
    sha256_file,
    write_test_set,
)

GENERATOR_VERSION = 1
DEFAULT_MITOSIS_DENSITY = 1.0 / 60_000.0  # mitotic figures per pixel, on average over cases
BOX_HALF_PX = 25  # MIDOG.json boxes are 50 x 50 px around the centre
LN10 = math.log(10.0)

F32 = npt.NDArray[np.float32]
Progress = Callable[[int, int], None]


# --------------------------------------------------------------------------------------------- scanners


@dataclass(frozen=True)
class ScannerProfile:
    """How one scanner renders a slide. Stain vectors are optical densities (base 10) per unit concentration
    in R, G, B; `white` is the illumination (white balance); the tone curve is applied to the blurred, noisy
    transmitted light: y = clip((x ** gamma - 0.5) * contrast + 0.5 + brightness)."""

    name: str
    spacing_mm: float
    stain_h: tuple[float, float, float]
    stain_e: tuple[float, float, float]
    h_strength: float
    e_strength: float
    white: tuple[float, float, float]
    gamma: float
    contrast: float
    brightness: float
    blur_sigma_px: float
    noise_sigma: float  # on the 0-255 scale, at mid-grey
    jpeg_quality: int | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _unit(v: Sequence[float]) -> tuple[float, float, float]:
    a = np.asarray(v, dtype=np.float64)
    a = a / np.linalg.norm(a)
    return (round(float(a[0]), 4), round(float(a[1]), 4), round(float(a[2]), 4))


# Hand-tuned presets: 0 is the crisp reference, 3 the most shifted (faded, grey-blue haematoxylin, yellow white
# balance, low contrast, blurred, noisy, heavily compressed, coarsest spacing). Mitoses stay visible on all.
_PRESETS: tuple[ScannerProfile, ...] = (
    ScannerProfile(
        name="scanner-0",
        spacing_mm=0.000250,
        stain_h=_unit((0.59, 0.74, 0.33)),
        stain_e=_unit((0.17, 0.86, 0.47)),
        h_strength=1.0,
        e_strength=1.0,
        white=(0.97, 0.96, 0.97),
        gamma=1.0,
        contrast=1.0,
        brightness=0.0,
        blur_sigma_px=0.6,
        noise_sigma=2.0,
        jpeg_quality=92,
    ),
    ScannerProfile(
        name="scanner-1",
        spacing_mm=0.000230,
        stain_h=_unit((0.52, 0.78, 0.38)),
        stain_e=_unit((0.10, 0.88, 0.46)),
        h_strength=1.25,
        e_strength=0.85,
        white=(0.99, 0.98, 1.0),
        gamma=0.85,
        contrast=1.06,
        brightness=0.01,
        blur_sigma_px=0.9,
        noise_sigma=3.0,
        jpeg_quality=85,
    ),
    ScannerProfile(
        name="scanner-2",
        spacing_mm=0.000243,
        stain_h=_unit((0.70, 0.66, 0.27)),
        stain_e=_unit((0.12, 0.82, 0.56)),
        h_strength=0.9,
        e_strength=1.15,
        white=(1.0, 0.95, 0.92),
        gamma=0.85,
        contrast=1.15,
        brightness=-0.03,
        blur_sigma_px=1.2,
        noise_sigma=4.0,
        jpeg_quality=75,
    ),
    ScannerProfile(
        name="scanner-3",
        spacing_mm=0.000262,
        stain_h=_unit((0.46, 0.68, 0.57)),
        stain_e=_unit((0.32, 0.80, 0.50)),
        h_strength=0.55,
        e_strength=0.6,
        white=(1.0, 0.97, 0.85),
        gamma=1.3,
        contrast=0.75,
        brightness=0.07,
        blur_sigma_px=2.1,
        noise_sigma=6.0,
        jpeg_quality=50,
    ),
    ScannerProfile(
        name="scanner-4",
        spacing_mm=0.000238,
        stain_h=_unit((0.62, 0.70, 0.36)),
        stain_e=_unit((0.22, 0.84, 0.50)),
        h_strength=1.2,
        e_strength=1.1,
        white=(0.93, 0.95, 0.99),
        gamma=1.1,
        contrast=1.2,
        brightness=-0.05,
        blur_sigma_px=1.0,
        noise_sigma=3.5,
        jpeg_quality=80,
    ),
    ScannerProfile(
        name="scanner-5",
        spacing_mm=0.000255,
        stain_h=_unit((0.57, 0.73, 0.38)),
        stain_e=_unit((0.13, 0.90, 0.42)),
        h_strength=0.8,
        e_strength=0.75,
        white=(0.98, 0.99, 0.96),
        gamma=1.15,
        contrast=0.9,
        brightness=0.04,
        blur_sigma_px=1.5,
        noise_sigma=5.0,
        jpeg_quality=65,
    ),
)


def scanner_profile(index: int) -> ScannerProfile:
    """Scanner `index` of every synthetic set: the hand-tuned presets first, then profiles drawn at random
    (seeded by the index only, so scanner k looks the same in every set)."""
    if index < 0:
        raise ValueError("scanner index must be >= 0")
    if index < len(_PRESETS):
        return _PRESETS[index]
    rng = np.random.default_rng([0x5CA7, index])
    base = _PRESETS[0]
    h = np.asarray(base.stain_h) + rng.normal(0, 0.08, 3)
    e = np.asarray(base.stain_e) + rng.normal(0, 0.08, 3)
    return ScannerProfile(
        name=f"scanner-{index}",
        spacing_mm=round(float(rng.uniform(0.000230, 0.000262)), 7),
        stain_h=_unit(np.clip(h, 0.05, None).tolist()),
        stain_e=_unit(np.clip(e, 0.03, None).tolist()),
        h_strength=round(float(rng.uniform(0.7, 1.2)), 3),
        e_strength=round(float(rng.uniform(0.65, 1.3)), 3),
        white=(
            round(float(rng.uniform(0.92, 1.0)), 3),
            round(float(rng.uniform(0.92, 1.0)), 3),
            round(float(rng.uniform(0.88, 1.0)), 3),
        ),
        gamma=round(float(rng.uniform(0.85, 1.25)), 3),
        contrast=round(float(rng.uniform(0.8, 1.2)), 3),
        brightness=round(float(rng.uniform(-0.05, 0.06)), 3),
        blur_sigma_px=round(float(rng.uniform(0.6, 1.8)), 2),
        noise_sigma=round(float(rng.uniform(2.0, 6.0)), 2),
        jpeg_quality=int(rng.integers(55, 93)),
    )


def graded_profiles(count: int = 4, reach: float = 0.7, letters: str = "ABCDEFGH") -> list[ScannerProfile]:
    """`count` scanners on the line from the crisp reference (scanner-0) towards the most shifted preset
    (scanner-3): scanner k takes the fraction reach * k / (count - 1) of every difference, so the shift grows
    evenly and even the last one keeps some signal (reach < 1). Named "scanner-A", "scanner-B", ..."""
    if not 1 <= count <= len(letters):
        raise ValueError(f"count must be between 1 and {len(letters)}, got {count}")
    if not 0.0 <= reach <= 1.0:
        raise ValueError(f"reach must lie in [0, 1], got {reach}")
    start, end = _PRESETS[0], _PRESETS[3]

    def mix(a: float, b: float, t: float) -> float:
        return a + (b - a) * t

    profiles = []
    for k in range(count):
        t = reach * k / (count - 1) if count > 1 else 0.0
        quality = (
            None
            if start.jpeg_quality is None or end.jpeg_quality is None
            else round(mix(start.jpeg_quality, end.jpeg_quality, t))
        )
        profiles.append(
            ScannerProfile(
                name=f"scanner-{letters[k]}",
                spacing_mm=round(mix(start.spacing_mm, end.spacing_mm, t), 7),
                stain_h=_unit([mix(a, b, t) for a, b in zip(start.stain_h, end.stain_h, strict=True)]),
                stain_e=_unit([mix(a, b, t) for a, b in zip(start.stain_e, end.stain_e, strict=True)]),
                h_strength=round(mix(start.h_strength, end.h_strength, t), 4),
                e_strength=round(mix(start.e_strength, end.e_strength, t), 4),
                white=(
                    round(mix(start.white[0], end.white[0], t), 4),
                    round(mix(start.white[1], end.white[1], t), 4),
                    round(mix(start.white[2], end.white[2], t), 4),
                ),
                gamma=round(mix(start.gamma, end.gamma, t), 4),
                contrast=round(mix(start.contrast, end.contrast, t), 4),
                brightness=round(mix(start.brightness, end.brightness, t), 4),
                blur_sigma_px=round(mix(start.blur_sigma_px, end.blur_sigma_px, t), 3),
                noise_sigma=round(mix(start.noise_sigma, end.noise_sigma, t), 3),
                jpeg_quality=quality,
            )
        )
    return profiles


# --------------------------------------------------------------------------------------------- rendering


class RenderedCase(NamedTuple):
    """One rendered image: `rgb` (H x W x 3 uint8, exactly the pixels written to the TIFF), and the centres
    (x, y) in pixels (x = column) of the mitotic figures and of the imposters, float64 arrays of shape (N, 2)."""

    rgb: npt.NDArray[np.uint8]
    mitoses: npt.NDArray[np.float64]
    imposters: npt.NDArray[np.float64]


def render_case(
    scanner: int | ScannerProfile = 0,
    *,
    size: tuple[int, int] = (1024, 1024),
    seed: int | Sequence[int] | np.random.Generator = 0,
    mitosis_density: float = DEFAULT_MITOSIS_DENSITY,
    imposter_ratio: float = 1.0,
) -> RenderedCase:
    """Render one case for `scanner` (an index or a profile) at `size` = (width, height) without writing files.

    `mitosis_density` is the mean number of mitotic figures per pixel (the per-case count varies around it);
    imposters are about `imposter_ratio` times as many. Labelled objects keep >= 25 px from the border, so
    their 50 x 50 px boxes lie inside the image.
    """
    profile = scanner if isinstance(scanner, ScannerProfile) else scanner_profile(scanner)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    width, height = size
    if width < 64 or height < 64:
        raise ValueError("size must be at least 64 x 64 pixels")
    h_conc, e_conc, mitoses, imposters = _draw_tissue(
        rng, width, height, profile.spacing_mm, mitosis_density, imposter_ratio
    )
    rgb = _scan(rng, h_conc, e_conc, profile)
    return RenderedCase(rgb=rgb, mitoses=mitoses, imposters=imposters)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale_px: float) -> F32:
    """Zero-mean, unit-variance noise with features about `scale_px` wide: a coarse grid of smoothed noise,
    doubled in size (bilinear) until it covers `shape`; cheap because every doubling is a few array ops."""
    h, w = shape
    doublings = max(round(math.log2(max(scale_px / 2.0, 1.0))), 0)
    f = 1 << doublings
    coarse = rng.standard_normal((h // f + 3, w // f + 3), dtype=np.float32)
    up = np.asarray(ndi.gaussian_filter(coarse, 1.0, mode="wrap"), dtype=np.float32)
    for _ in range(doublings):
        up = _upsample2(up, (2 * up.shape[0] - 1, 2 * up.shape[1] - 1))
    up = np.ascontiguousarray(up[:h, :w])
    up -= up.mean()
    up /= up.std() + 1e-6
    return up


def _upsample2(a: F32, shape: tuple[int, int]) -> F32:
    """Bilinear 2x upsampling (sample i of `a` lands on pixel 2i), cropped to `shape`."""
    h, w = a.shape
    rows = np.empty((2 * h - 1, w), dtype=np.float32)
    rows[0::2] = a
    rows[1::2] = 0.5 * (a[:-1] + a[1:])
    out = np.empty((2 * h - 1, 2 * w - 1), dtype=np.float32)
    out[:, 0::2] = rows
    out[:, 1::2] = 0.5 * (rows[:, :-1] + rows[:, 1:])
    return np.ascontiguousarray(out[: shape[0], : shape[1]])


def _sigmoid(x: F32) -> F32:
    return np.asarray(0.5 * (np.tanh(0.5 * x) + 1.0), dtype=np.float32)


def _draw_tissue(
    rng: np.random.Generator,
    width: int,
    height: int,
    spacing_mm: float,
    mitosis_density: float,
    imposter_ratio: float,
) -> tuple[F32, F32, npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    um = 1.0 / (spacing_mm * 1000.0)  # pixels per micrometre
    shape = (height, width)

    # -- eosin stroma: low-frequency density, fibres, grain; holes (lumina, fat) with almost no stain. The smooth
    # fields are drawn at half resolution (uh = pixels per um there) and upsampled once.
    half = (height // 2 + 1, width // 2 + 1)
    uh = um / 2.0
    tissue = _sigmoid((_smooth_noise(rng, half, 90 * uh) + 1.6) * 4.0)
    cellular = _sigmoid(_smooth_noise(rng, half, 60 * uh) * 2.2 + rng.uniform(-0.8, 0.8))
    fibres, fibre_angle = _fibres(rng, half, uh)
    e0 = rng.uniform(0.30, 0.46)
    stroma = e0 * (0.8 + 0.2 * _smooth_noise(rng, half, 30 * uh)) * (1.0 + 0.45 * fibres * (1.0 - cellular))
    cytoplasm = (0.8 * e0) * (1.0 + 0.25 * _smooth_noise(rng, half, 6 * uh))
    e_half = np.clip(stroma * (1.0 - cellular) + cytoplasm * cellular, 0.0, None) * tissue
    h_half = (0.03 + 0.03 * cellular) * tissue
    grain = ndi.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), 0.3 * um)
    grain /= grain.std() + 1e-6
    e_conc = _upsample2(e_half, shape)
    e_conc *= 1.0 + 0.08 * grain
    e_conc += np.float32(0.02)
    h_conc = _upsample2(h_half, shape)
    h_conc *= np.clip(1.0 + 0.3 * grain, 0.0, None)

    # -- labelled objects first (they keep a clear neighbourhood), then ordinary nuclei around them
    area = width * height
    activity = rng.gamma(4.0, 0.25)  # per-case mitotic activity, mean 1
    n_mit = int(rng.poisson(area * mitosis_density * activity))
    n_imp = int(rng.poisson(area * mitosis_density * imposter_ratio * rng.uniform(0.8, 1.3)))
    margin = BOX_HALF_PX + 2
    centres = _place_objects(rng, tissue, (width, height), n_mit + n_imp, margin=margin, min_dist=14 * um)
    kinds = np.zeros(len(centres), dtype=bool)
    kinds[: min(n_mit, len(centres))] = True
    rng.shuffle(kinds)
    mitoses = centres[kinds]
    imposters = centres[~kinds]

    nuclei = _nucleus_layout(rng, tissue, cellular, (width, height), um)
    if len(centres):
        d2 = ((nuclei[:, None, :2] - centres[None, :, :]) ** 2).sum(-1).min(axis=1)
        nuclei = nuclei[d2 > (9.5 * um) ** 2]

    _stamp_nuclei(rng, h_conc, grain, nuclei, um, fibre_angle)
    for cx, cy in mitoses:
        _stamp_mitosis(rng, h_conc, e_conc, grain, float(cx), float(cy), um)
    for cx, cy in imposters:
        _stamp_imposter(rng, h_conc, e_conc, grain, float(cx), float(cy), um)
    return h_conc, e_conc, mitoses.astype(np.float64), imposters.astype(np.float64)


def _directional_blur(a: F32, sigma: float, direction: int) -> F32:
    """Gaussian blur along one of four directions: 0 = along x, 1 = the diagonal (1, 1), 2 = along y,
    3 = the diagonal (1, -1). Diagonals are done by shearing rows so that the diagonal becomes a column."""
    if direction == 0:
        return np.asarray(ndi.gaussian_filter1d(a, sigma, axis=1, mode="wrap"), dtype=np.float32)
    if direction == 2:
        return np.asarray(ndi.gaussian_filter1d(a, sigma, axis=0, mode="wrap"), dtype=np.float32)
    h, w = a.shape
    sign = 1 if direction == 1 else -1
    idx = (np.arange(w)[None, :] + sign * np.arange(h)[:, None]) % w
    sheared = np.take_along_axis(a, idx, axis=1)
    blurred = ndi.gaussian_filter1d(sheared, sigma / math.sqrt(2.0), axis=0, mode="reflect")
    out = np.empty_like(a)
    np.put_along_axis(out, idx, blurred, axis=1)
    return out


def _fibres(rng: np.random.Generator, shape: tuple[int, int], um: float) -> tuple[F32, F32]:
    """Collagen-like fibre texture in [-1, 1]: thin streaks whose direction drifts smoothly over the tissue
    (four oriented line textures blended by a low-frequency angle field); returns (texture, angle)."""
    base = ndi.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), 0.35 * um)
    angle = _smooth_noise(rng, shape, 50 * um) * np.float32(1.4) + np.float32(rng.uniform(0, math.pi))
    out = np.zeros(shape, dtype=np.float32)
    norm = np.zeros(shape, dtype=np.float32)
    for k in range(4):
        streaks = _directional_blur(base, 3.5 * um, k)
        streaks /= streaks.std() + 1e-6
        weight = np.maximum(np.cos(2.0 * (angle - np.float32(k * math.pi / 4))), 0.0) ** 8
        out += weight * streaks
        norm += weight
    return np.asarray(np.tanh(1.3 * out / np.sqrt(norm * norm + 1e-6)), dtype=np.float32), angle


def _place_objects(
    rng: np.random.Generator, tissue: F32, size: tuple[int, int], n: int, *, margin: int, min_dist: float
) -> npt.NDArray[np.float64]:
    """Up to n integer centres inside tissue (a half-resolution map), >= margin px from the border of an image
    of `size` = (w, h), >= min_dist px apart."""
    if n == 0:
        return np.zeros((0, 2))
    w, h = size
    if w <= 2 * margin or h <= 2 * margin:
        return np.zeros((0, 2))
    cand = np.stack(
        [rng.integers(margin, w - margin, 40 * n + 40), rng.integers(margin, h - margin, 40 * n + 40)], axis=1
    )
    keep = tissue[cand[:, 1] // 2, cand[:, 0] // 2] > rng.uniform(0.4, 0.95, len(cand))
    cand = cand[keep]
    chosen: list[npt.NDArray[np.int64]] = []
    pts = np.zeros((0, 2))
    for c in cand:
        if len(chosen) >= n:
            break
        if len(chosen) and ((pts - c) ** 2).sum(axis=1).min() < min_dist**2:
            continue
        chosen.append(c)
        pts = np.asarray(chosen, dtype=np.float64)
    return pts


def _nucleus_layout(
    rng: np.random.Generator, tissue: F32, cellular: F32, size: tuple[int, int], um: float
) -> npt.NDArray[np.float64]:
    """Rows (x, y, kind): kind 0 tumour cell, 1 stromal spindle, 2 lymphocyte. Jittered grid -> little overlap.
    `tissue` and `cellular` are half-resolution maps of an image of `size` = (w, h)."""
    w, h = size
    cell = 10.5 * um
    gx, gy = np.meshgrid(np.arange(cell / 2, w, cell), np.arange(cell / 2, h, cell))
    gx = gx.ravel() + rng.uniform(-0.3, 0.3, gx.size) * cell
    gy = gy.ravel() + rng.uniform(-0.3, 0.3, gy.size) * cell
    inside = (gx >= 0) & (gx < w) & (gy >= 0) & (gy < h)
    gx, gy = gx[inside], gy[inside]
    ix, iy = gx.astype(int) // 2, gy.astype(int) // 2
    t, c = tissue[iy, ix], cellular[iy, ix]
    u = rng.uniform(0, 1, gx.size)
    tumour = (u < 0.92 * c * t) & (t > 0.5)
    spindle = ~tumour & (u < 0.92 * c * t + 0.16 * (1 - c) * t) & (t > 0.5)
    lympho = ~tumour & ~spindle & (rng.uniform(0, 1, gx.size) < 0.05 * t)
    kind = np.full(gx.size, -1)
    kind[tumour], kind[spindle], kind[lympho] = 0, 1, 2
    keep = kind >= 0
    return np.stack([gx[keep], gy[keep], kind[keep].astype(float)], axis=1)


def _patch(shape: tuple[int, ...], cx: float, cy: float, radius: float) -> tuple[slice, slice, F32, F32] | None:
    h, w = shape[:2]
    r = math.ceil(radius)
    x0, x1 = max(int(cx) - r, 0), min(int(cx) + r + 2, w)
    y0, y1 = max(int(cy) - r, 0), min(int(cy) + r + 2, h)
    if x0 >= x1 or y0 >= y1:
        return None
    dx = (np.arange(x0, x1, dtype=np.float32) - np.float32(cx))[None, :]
    dy = (np.arange(y0, y1, dtype=np.float32) - np.float32(cy))[:, None]
    return slice(y0, y1), slice(x0, x1), dx, dy


def _blob_mask(
    dx: F32,
    dy: F32,
    a: float,
    b: float,
    angle: float,
    harmonics: npt.NDArray[np.float64],
    phases: npt.NDArray[np.float64],
    soft: float,
) -> tuple[F32, F32]:
    """Soft mask of a star-shaped blob: an ellipse (semi-axes a, b px) whose radius is modulated by
    1 + sum_k harmonics[k] cos((k + 2) theta + phases[k]); also returns the signed distance (px, < 0 inside)."""
    ca, sa = math.cos(angle), math.sin(angle)
    u = (dx * ca + dy * sa) / a
    v = (-dx * sa + dy * ca) / b
    rho = np.sqrt(u * u + v * v)
    boundary = np.ones_like(rho)
    if len(harmonics):
        # cos/sin of 2, 3, 4 theta from cos/sin theta (no arctan2, no cos of large arrays)
        inv = 1.0 / np.maximum(rho, np.float32(1e-6))
        c1, s1 = u * inv, v * inv
        c2, s2 = c1 * c1 - s1 * s1, 2.0 * c1 * s1
        multiples = ((c2, s2), (c2 * c1 - s2 * s1, s2 * c1 + c2 * s1), (c2 * c2 - s2 * s2, 2.0 * s2 * c2))
        for (ck, sk), amp, ph in zip(multiples, harmonics, phases, strict=False):
            boundary += np.float32(amp * math.cos(ph)) * ck - np.float32(amp * math.sin(ph)) * sk
    dist = (rho - boundary) * np.float32(min(a, b))
    mask = np.clip(0.5 - dist / np.float32(soft), 0.0, 1.0)
    return mask.astype(np.float32, copy=False), dist.astype(np.float32, copy=False)


def _stamp_nuclei(
    rng: np.random.Generator,
    h_conc: F32,
    chroma: F32,
    nuclei: npt.NDArray[np.float64],
    um: float,
    fibre_angle: F32,
) -> None:
    n = len(nuclei)
    kind = nuclei[:, 2].astype(int) if n else np.zeros(0, dtype=int)
    # per-nucleus parameters drawn in one go (vectorised), used in the patch loop
    r_t = rng.uniform(3.0, 5.2, n) * um
    asp = rng.uniform(1.0, 1.55, n)
    a = np.where(kind == 0, r_t * np.sqrt(asp), np.where(kind == 1, rng.uniform(4.5, 7.0, n) * um, 0.0))
    b = np.where(kind == 0, r_t / np.sqrt(asp), np.where(kind == 1, rng.uniform(0.9, 1.5, n) * um, 0.0))
    r_l = rng.uniform(1.7, 2.5, n) * um
    a = np.where(kind == 2, r_l, a)
    b = np.where(kind == 2, r_l * rng.uniform(0.9, 1.0, n), b)
    angle = rng.uniform(0, math.pi, n)
    if n:  # spindle (stromal) nuclei lie along the collagen fibres
        along = fibre_angle[(nuclei[:, 1] // 2).astype(int), (nuclei[:, 0] // 2).astype(int)]
        angle = np.where(kind == 1, along + rng.normal(0, 0.12, n), angle)
    harm = rng.normal(0, 1, (n, 3)) * np.array([0.07, 0.04, 0.025])
    harm[kind == 2] *= 0.3
    phases = rng.uniform(0, 2 * math.pi, (n, 3))
    conc = np.where(kind == 0, rng.uniform(0.42, 0.9, n), np.where(kind == 1, rng.uniform(0.7, 1.0, n), 1.0))
    conc = np.where(kind == 2, rng.uniform(1.0, 1.25, n), conc)
    texture = np.where(kind == 0, rng.uniform(0.2, 0.45, n), 0.15)
    rim = np.where(kind == 0, rng.uniform(0.1, 0.35, n), 0.0)
    nucleolus = (kind == 0) & (rng.uniform(0, 1, n) < 0.45)
    nuc_off = rng.normal(0, 0.3, (n, 2))
    soft = 0.35 * um
    for i in range(n):
        cx, cy = nuclei[i, 0], nuclei[i, 1]
        p = _patch(h_conc.shape, cx, cy, a[i] * 1.25 + 2)
        if p is None:
            continue
        ys, xs, dx, dy = p
        mask, dist = _blob_mask(dx, dy, a[i], b[i], angle[i], harm[i], phases[i], soft)
        val = mask * np.float32(conc[i]) * (1.0 + np.float32(texture[i]) * chroma[ys, xs])
        if rim[i] > 0:
            val += np.float32(rim[i] * conc[i]) * mask * np.exp(-((dist / np.float32(0.6 * um)) ** 2))
        if nucleolus[i]:
            ox, oy = nuc_off[i] * min(a[i], b[i])
            val += np.float32(0.6) * np.exp(-((dx - ox) ** 2 + (dy - oy) ** 2) / np.float32((0.55 * um) ** 2))
        np.maximum(h_conc[ys, xs], val, out=h_conc[ys, xs])


def _stamp_mitosis(
    rng: np.random.Generator, h_conc: F32, e_conc: F32, chroma: F32, cx: float, cy: float, um: float
) -> None:
    """A mitotic figure: many elongated chromosome blobs, saturating to very dark, irregular, spiky clumps."""
    phase = rng.choice(4, p=[0.3, 0.4, 0.2, 0.1])  # prophase, metaphase, anaphase, telophase
    axis = rng.uniform(0, math.pi)
    ca, sa = math.cos(axis), math.sin(axis)
    if phase == 0:  # clumped chromatin filling a ragged disc
        k = int(rng.integers(22, 36))
        clumps = rng.normal(0, 1.6 * um, (int(rng.integers(3, 7)), 2))
        pos = clumps[rng.integers(0, len(clumps), k)] + rng.normal(0, 1.0 * um, (k, 2))
    elif phase == 1:  # metaphase plate: a thick ragged bar
        k = int(rng.integers(20, 34))
        t = rng.uniform(-1, 1, k) * rng.uniform(3.5, 5.5) * um
        n = rng.normal(0, 0.75 * um, k)
        pos = np.stack([t * ca - n * sa, t * sa + n * ca], axis=1)
    else:  # anaphase (two parallel bars) / telophase (two compact clumps)
        k = int(rng.integers(24, 38))
        sep = (rng.uniform(1.8, 3.0) if phase == 2 else rng.uniform(2.6, 3.6)) * um
        side = np.where(rng.uniform(0, 1, k) < 0.5, -1.0, 1.0)
        length = (rng.uniform(3.0, 4.5) if phase == 2 else rng.uniform(1.5, 2.4)) * um
        t = rng.uniform(-1, 1, k) * length
        n = side * sep + rng.normal(0, 0.6 * um, k)
        pos = np.stack([t * ca - n * sa, t * sa + n * ca], axis=1)
    ang = rng.uniform(0, math.pi, k)
    s_long = rng.uniform(0.7, 1.3, k) * um
    s_short = rng.uniform(0.28, 0.45, k) * um
    extent = float(np.abs(pos).max()) + 2.5 * um if k else 0.0
    halo_r = max(extent + 2.0 * um, 6.5 * um)
    p = _patch(h_conc.shape, cx, cy, halo_r * 1.3)
    if p is None:
        return
    ys, xs, dx, dy = p
    c = np.cos(ang).astype(np.float32)[:, None, None]
    s = np.sin(ang).astype(np.float32)[:, None, None]
    px = dx[None] - pos[:, 0].astype(np.float32)[:, None, None]
    py = dy[None] - pos[:, 1].astype(np.float32)[:, None, None]
    u = (px * c + py * s) / s_long.astype(np.float32)[:, None, None]
    v = (-px * s + py * c) / s_short.astype(np.float32)[:, None, None]
    density = np.exp(-0.5 * (u * u + v * v)).sum(axis=0)
    cmax = np.float32(rng.uniform(1.75, 2.4))
    val = cmax * (1.0 - np.exp(-1.8 * density)) * (1.0 + 0.12 * chroma[ys, xs])
    r2 = dx * dx + dy * dy
    halo = np.exp(-((r2 / np.float32(halo_r**2)) ** 2))
    e_conc[ys, xs] *= 1.0 - np.float32(rng.uniform(0.35, 0.6)) * halo
    h_conc[ys, xs] *= 1.0 - 0.9 * halo
    np.maximum(h_conc[ys, xs], val.astype(np.float32), out=h_conc[ys, xs])


def _stamp_imposter(
    rng: np.random.Generator, h_conc: F32, e_conc: F32, chroma: F32, cx: float, cy: float, um: float
) -> None:
    """A look-alike: round, smooth-edged, homogeneous and paler than a mitotic figure."""
    kind = rng.choice(3, p=[0.55, 0.25, 0.2])  # pyknotic nucleus, apoptotic fragments, hyperchromatic nucleus
    if kind == 0:
        r = rng.uniform(2.3, 3.6) * um
        blobs = [(0.0, 0.0, r, r * rng.uniform(0.88, 1.0))]
        conc, texture = rng.uniform(0.95, 1.3), 0.04
    elif kind == 1:
        m = int(rng.integers(2, 4))
        offs = rng.normal(0, 1.6 * um, (m, 2))
        blobs = [(float(o[0]), float(o[1]), r, r) for o, r in zip(offs, rng.uniform(1.1, 1.8, m) * um, strict=True)]
        conc, texture = rng.uniform(0.95, 1.25), 0.04
    else:
        a = rng.uniform(3.4, 4.6) * um
        blobs = [(0.0, 0.0, a, a * rng.uniform(0.75, 0.95))]
        conc, texture = rng.uniform(0.9, 1.15), 0.12
    extent = max(abs(bx) + ba for bx, by, ba, bb in blobs) + max(abs(by) + ba for bx, by, ba, bb in blobs)
    halo_r = max(extent, 4.5 * um) * 1.5
    p = _patch(h_conc.shape, cx, cy, halo_r * 1.3)
    if p is None:
        return
    ys, xs, dx, dy = p
    val = np.zeros((dy.shape[0], dx.shape[1]), dtype=np.float32)
    no_harm = np.zeros(0)
    for bx, by, ba, bb in blobs:
        mask, _ = _blob_mask(
            dx - np.float32(bx),
            dy - np.float32(by),
            ba,
            bb,
            rng.uniform(0, math.pi),
            no_harm,
            no_harm,
            0.9 * um,
        )
        np.maximum(val, mask, out=val)
    val *= np.float32(conc) * (1.0 + np.float32(texture) * chroma[ys, xs])
    r2 = dx * dx + dy * dy
    halo = np.exp(-((r2 / np.float32(halo_r**2)) ** 2))
    if kind < 2:  # apoptotic cells: hyper-eosinophilic, shrunken cytoplasm
        e_conc[ys, xs] += np.float32(rng.uniform(0.15, 0.4)) * halo
    h_conc[ys, xs] *= 1.0 - 0.8 * halo
    np.maximum(h_conc[ys, xs], val, out=h_conc[ys, xs])


def _scan(rng: np.random.Generator, h_conc: F32, e_conc: F32, profile: ScannerProfile) -> npt.NDArray[np.uint8]:
    """Beer-Lambert transmission -> optical blur -> sensor noise -> tone curve -> 8 bits -> JPEG round trip."""
    height, width = h_conc.shape
    out = np.empty((height, width, 3), dtype=np.uint8)
    levels = 4096
    x = np.linspace(0.0, 1.0, levels)
    tone = np.clip((x**profile.gamma - 0.5) * profile.contrast + 0.5 + profile.brightness, 0.0, 1.0)
    lut = np.round(tone * 255.0).astype(np.uint8)
    noise_scale = np.float32(profile.noise_sigma / 255.0)
    for ch in range(3):
        od = h_conc * np.float32(profile.h_strength * profile.stain_h[ch] * LN10)
        od += e_conc * np.float32(profile.e_strength * profile.stain_e[ch] * LN10)
        np.negative(od, out=od)
        light = np.exp(od, out=od)
        light *= np.float32(profile.white[ch])
        if profile.blur_sigma_px > 0:
            light = ndi.gaussian_filter(light, profile.blur_sigma_px, truncate=3.0)
        noise = rng.standard_normal((height, width), dtype=np.float32)
        noise *= noise_scale * (0.5 + np.sqrt(light))  # shot noise grows with the signal, plus a read floor
        light += noise
        np.clip(light, 0.0, 1.0, out=light)
        light *= np.float32(levels - 1)
        out[:, :, ch] = lut[light.astype(np.uint16)]
    if profile.jpeg_quality is not None:
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(out).save(buf, format="JPEG", quality=int(profile.jpeg_quality))
        buf.seek(0)
        with Image.open(buf) as im:
            out = np.asarray(im.convert("RGB")).copy()
    return out


# --------------------------------------------------------------------------------------------- test sets


@dataclass(frozen=True)
class _Job:
    out_dir: str
    name: str
    scanner_index: int
    case_index: int
    profile: ScannerProfile
    size: tuple[int, int]
    seed: int
    mitosis_density: float
    imposter_ratio: float
    preview_tile: int


@dataclass(frozen=True)
class _Done:
    name: str
    sha256: str
    mitoses: npt.NDArray[np.float64]
    imposters: npt.NDArray[np.float64]
    tile: npt.NDArray[np.uint8] | None
    tile_origin: tuple[int, int]


def _run_job(job: _Job) -> _Done:
    from worker.datasets.tiff import write_rgb_tiff

    rng = np.random.default_rng([job.seed, job.scanner_index, job.case_index])
    case = render_case(
        job.profile,
        size=job.size,
        seed=rng,
        mitosis_density=job.mitosis_density,
        imposter_ratio=job.imposter_ratio,
    )
    path = Path(job.out_dir) / IMAGES_DIR / job.name
    write_rgb_tiff(path, case.rgb, job.profile.spacing_mm)
    tile, origin = None, (0, 0)
    if job.preview_tile:
        tile, origin = _preview_crop(case, job.preview_tile)
    return _Done(
        name=job.name,
        sha256=sha256_file(path),
        mitoses=case.mitoses,
        imposters=case.imposters,
        tile=tile,
        tile_origin=origin,
    )


def generate_test_set(
    out_dir: str | os.PathLike[str],
    *,
    scanners: int | Sequence[ScannerProfile] = 4,
    cases_per_scanner: int = 5,
    size: tuple[int, int] = (2048, 1536),
    seed: int = 0,
    preview: bool = False,
    progress: Progress | None = None,
    workers: int = 1,
    mitosis_density: float = DEFAULT_MITOSIS_DENSITY,
    imposter_ratio: float = 1.0,
) -> TestSet:
    """Write a synthetic test set to `out_dir` (layout: worker.datasets.manifest) and return it.

    Cases are numbered 001, 002, ... scanner by scanner (like the MIDOG 2021 id ranges); each is a TIFF with
    resolution tags. Ground truth: official format (mitotic figures only, mm) and MIDOG.json (pixel boxes,
    imposters as category 2); groups.csv maps each case to its scanner. `progress(done, total)` is called after
    each case. `workers` > 1 renders in that many processes; the bytes written do not depend on it.
    """
    root = Path(out_dir)
    profiles = [scanner_profile(i) for i in range(scanners)] if isinstance(scanners, int) else list(scanners)
    if not profiles or cases_per_scanner < 1:
        raise ValueError("need at least one scanner and one case per scanner")
    if len({p.name for p in profiles}) != len(profiles):
        raise ValueError("scanner names must be unique")
    total = len(profiles) * cases_per_scanner
    digits = max(3, len(str(total)))
    (root / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    jobs: list[_Job] = []
    for s, profile in enumerate(profiles):
        for k in range(cases_per_scanner):
            jobs.append(
                _Job(
                    out_dir=str(root),
                    name=f"{len(jobs) + 1:0{digits}d}.tiff",
                    scanner_index=s,
                    case_index=k,
                    profile=profile,
                    size=(int(size[0]), int(size[1])),
                    seed=int(seed),
                    mitosis_density=mitosis_density,
                    imposter_ratio=imposter_ratio,
                    preview_tile=_PREVIEW_TILE if preview and k == 0 else 0,
                )
            )
    done: dict[str, _Done] = {}
    if progress is not None:
        progress(0, total)
    if workers > 1 and total > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(workers, total), mp_context=ctx) as pool:
            for result in pool.map(_run_job, jobs):
                done[result.name] = result
                if progress is not None:
                    progress(len(done), total)
    else:
        for job in jobs:
            done[job.name] = _run_job(job)
            if progress is not None:
                progress(len(done), total)

    cases: list[Case] = []
    gt: dict[str, list[list[float]]] = {}
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for i, job in enumerate(jobs):
        result = done[job.name]
        sp = job.profile.spacing_mm
        cases.append(
            Case(
                name=job.name,
                image=f"{IMAGES_DIR}/{job.name}",
                scanner=job.profile.name,
                width=job.size[0],
                height=job.size[1],
                spacing_mm=sp,
                sha256=result.sha256,
                groups={"scanner": job.profile.name},
            )
        )
        # docs/scoring.md, Units and coordinates: mm = spacing * pixel index (origin 0); the box centre is the
        # rendered centre
        gt[job.name] = [[float(sp * x), float(sp * y), 0] for x, y in result.mitoses]
        images.append({"id": i + 1, "file_name": job.name, "width": job.size[0], "height": job.size[1]})
        for category, pts in ((1, result.mitoses), (2, result.imposters)):
            for x, y in pts:
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": i + 1,
                        "category_id": category,
                        "bbox": [
                            int(x) - BOX_HALF_PX,
                            int(y) - BOX_HALF_PX,
                            int(x) + BOX_HALF_PX,
                            int(y) + BOX_HALF_PX,
                        ],
                    }
                )
    midog = {
        "info": {"description": f"midog-eval synthetic test set (generator v{GENERATOR_VERSION}, seed {seed})"},
        "images": images,
        "categories": [{"id": 1, "name": MITOTIC_FIGURE}, {"id": 2, "name": NOT_MITOTIC_FIGURE}],
        "annotations": annotations,
    }
    manifest = Manifest(
        name=f"synthetic-seed{seed}",
        cases=tuple(cases),
        source={
            "kind": "synthetic",
            "generator_version": GENERATOR_VERSION,
            "seed": int(seed),
            "size": [int(size[0]), int(size[1])],
            "cases_per_scanner": cases_per_scanner,
            "mitosis_density": mitosis_density,
            "imposter_ratio": imposter_ratio,
            "scanners": [p.to_json() for p in profiles],
        },
    )
    test_set = write_test_set(root, manifest, ground_truth=gt, midog_json=midog)
    if preview:
        tiles = [(p.name, done[jobs[s * cases_per_scanner].name]) for s, p in enumerate(profiles)]
        write_montage(
            root / PREVIEW_NAME,
            [
                (name, d.tile, d.tile_origin, d.mitoses, d.imposters, p)
                for (name, d), p in zip(tiles, profiles, strict=True)
            ],
        )
    return test_set


# --------------------------------------------------------------------------------------------- preview

_PREVIEW_TILE = 384


def _preview_crop(case: RenderedCase, tile: int) -> tuple[npt.NDArray[np.uint8], tuple[int, int]]:
    """A tile-sized crop of the image around the densest spot of labelled objects (1:1 pixels)."""
    h, w = case.rgb.shape[:2]
    th, tw = min(tile, h), min(tile, w)
    pts = np.concatenate([case.mitoses, case.imposters]) if len(case.mitoses) else case.imposters
    if len(case.mitoses):
        # the crop containing the most mitotic figures and imposters, centred on a mitotic figure
        best = max(
            case.mitoses,
            key=lambda c: int((np.abs(pts - c) < np.array([tw / 2 - 30, th / 2 - 30])).all(axis=1).sum()),
        )
        cx, cy = int(best[0]), int(best[1])
    else:
        cx, cy = w // 2, h // 2
    x0 = min(max(cx - tw // 2, 0), w - tw)
    y0 = min(max(cy - th // 2, 0), h - th)
    return case.rgb[y0 : y0 + th, x0 : x0 + tw].copy(), (x0, y0)


def write_montage(
    path: Path,
    tiles: Sequence[
        tuple[
            str,
            npt.NDArray[np.uint8] | None,
            tuple[int, int],
            npt.NDArray[np.float64],
            npt.NDArray[np.float64],
            ScannerProfile,
        ]
    ],
    *,
    columns: int = 4,
) -> None:
    """One labelled tile per scanner; mitotic figures ringed green, imposters ringed orange (dashed)."""
    from PIL import Image, ImageDraw, ImageFont

    label_h = 34
    size = max((t.shape[1] for _, t, *_ in tiles if t is not None), default=_PREVIEW_TILE)
    cols = min(columns, len(tiles))
    rows = (len(tiles) + cols - 1) // cols
    gap = 6
    canvas = Image.new("RGB", (cols * size + (cols + 1) * gap, rows * (size + label_h) + (rows + 1) * gap), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=14)
    small = ImageFont.load_default(size=11)
    for i, (name, tile, origin, mitoses, imposters, profile) in enumerate(tiles):
        r, c = divmod(i, cols)
        x = gap + c * (size + gap)
        y = gap + r * (size + label_h + gap)
        draw.text((x + 2, y + 1), name, fill="black", font=font)
        spec = f"{profile.spacing_mm * 1000:.3f} um/px  blur {profile.blur_sigma_px:.1f}  JPEG q{profile.jpeg_quality}"
        draw.text((x + 2, y + 18), spec, fill=(70, 70, 70), font=small)
        if tile is None:
            continue
        canvas.paste(Image.fromarray(tile), (x, y + label_h))
        th, tw = tile.shape[:2]
        for pts, colour, dashed in ((mitoses, (0, 200, 0), False), (imposters, (255, 140, 0), True)):
            for px, py in pts:
                u, v = px - origin[0], py - origin[1]
                if 0 <= u < tw and 0 <= v < th:
                    _ring(draw, x + u, y + label_h + v, 24, colour, dashed)
    # a 256-colour palette keeps the montage small enough for a README (~0.3 MB instead of ~0.8 MB)
    canvas.quantize(256, method=Image.Quantize.MEDIANCUT).save(path, format="PNG", optimize=True)


def _ring(draw: Any, cx: float, cy: float, r: float, colour: tuple[int, int, int], dashed: bool) -> None:
    box = (cx - r, cy - r, cx + r, cy + r)
    if not dashed:
        draw.ellipse(box, outline=colour, width=2)
        return
    for start in range(0, 360, 40):
        draw.arc(box, start, start + 22, fill=colour, width=2)


__all__ = [
    "DEFAULT_MITOSIS_DENSITY",
    "RenderedCase",
    "ScannerProfile",
    "generate_test_set",
    "render_case",
    "scanner_profile",
    "write_montage",
]
