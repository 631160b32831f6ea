"""Synthetic MIDOG 2025 Track 2 test sets: stacks of patches of normal and atypical mitotic figures, per scanner
and per tumour domain, with a controllable shift between scanners.

Model. Each stack is drawn as one small "slide" in stain-concentration space with synth.py's machinery (eosin
stroma and cytoplasm, collagen fibres, tumour / stromal / lymphocyte nuclei, chromatin texture), its mitotic
figures on a grid, one per patch; the slide is then *scanned* with synth.py's scanner model (stain vectors,
strengths, white balance, blur, noise, tone curve, JPEG, pixel spacing) and cut into patches centred on the
figures (stacks.patch_origin: the figure lies on pixel size // 2 of its patch).

- tumour domain (`DomainStyle`): nucleus size and density, cellularity, eosin level, fibres, chromatin
  darkness and how common atypical figures are; so the domains look different and have different
  prevalences, as in MIDOG;
- normal figures: compact and symmetric: prometaphase clumps, straight metaphase plates, anaphase bars and
  telophase clumps of equal mass, polar-view rings;
- atypical figures: irregular, multi-lobed chromatin: multipolar (three or four arms or poles), asymmetric
  bipolar (unequal daughter masses), lagging chromosomes and bridges in the midzone, scattered clumps;
- scanner shift (`shift`): every scanner's profile is moved from the reference scanner (scanner-0) towards
  its own preset by `shift`: 0 renders all scanners alike, 1 uses synth.py's presets (the detection set's
  scanners), above 1 exaggerates the differences.

Randomness: the labels and patch count of a stack come from a generator seeded with (seed, scanner, domain,
stack); its pixels from another with the same key; so a stack does not depend on the size of the set nor on the
number of processes: same seed -> same bytes. Imports numpy, scipy, Pillow, tifffile; never torch.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage as ndi

from worker.datasets.manifest import CLASSIFICATION, IMAGES_DIR, PREVIEW_NAME, Case, Manifest, TestSet, sha256_file
from worker.datasets.stacks import (
    ATYPICAL,
    DEFAULT_PATCH_SIZE,
    MAX_PATCHES,
    NORMAL,
    StackTruth,
    cut_patch,
    stack_groups,
    write_classification_test_set,
    write_stack_tiff,
)
from worker.datasets.synth import (
    ScannerProfile,
    _fibres,
    _nucleus_layout,
    _patch,
    _scan,
    _sigmoid,
    _smooth_noise,
    _stamp_nuclei,
    _unit,
    _upsample2,
    scanner_profile,
)

GENERATOR_VERSION = 1
DEFAULT_ATYPICAL_FRACTION = 0.2
DEFAULT_SHIFT = 1.0
NORMAL_FIGURES = ("prometaphase", "metaphase", "anaphase", "telophase", "ring")
ATYPICAL_FIGURES = ("multipolar", "asymmetric", "lagging", "scattered")
_NORMAL_P = (0.25, 0.35, 0.15, 0.12, 0.13)
_ATYPICAL_P = (0.3, 0.25, 0.25, 0.2)
_FIGURE_REACH_UM = 16.0  # no figure, halo included, reaches further from its centre

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
U8 = npt.NDArray[np.uint8]
Progress = Callable[[int, int], None]


# --------------------------------------------------------------------------------------------- domains


@dataclass(frozen=True)
class DomainStyle:
    """How a tumour domain looks: `nucleus_scale` multiplies nucleus size and spacing, `cellularity` shifts the
    cellular/stroma balance (logit), `eosin` and `fibres` scale the stroma, `chromatin` the darkness of mitotic
    chromatin, `atypical_weight` the share of atypical figures (times the set's atypical fraction)."""

    name: str
    nucleus_scale: float
    cellularity: float
    eosin: float
    fibres: float
    chromatin: float
    atypical_weight: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


_DOMAIN_PRESETS: tuple[DomainStyle, ...] = (
    DomainStyle("domain-0", 1.0, 0.6, 1.0, 0.6, 1.0, 1.0),  # carcinoma-like: nests of tumour cells in stroma
    DomainStyle("domain-1", 0.8, 1.8, 0.7, 0.2, 1.05, 0.8),  # round-cell: dense small nuclei, little stroma
    DomainStyle("domain-2", 1.15, -0.4, 1.25, 1.3, 0.95, 1.25),  # spindle-cell: fibrous, eosinophilic
    DomainStyle("domain-3", 1.3, 0.9, 0.9, 0.4, 0.9, 1.1),  # large pleomorphic nuclei
    DomainStyle("domain-4", 0.95, 0.3, 1.4, 0.8, 1.1, 0.7),  # pink, granular cytoplasm
    DomainStyle("domain-5", 1.1, 0.2, 0.85, 0.9, 1.0, 1.15),
)


def domain_style(index: int) -> DomainStyle:
    """Tumour domain `index`: the presets first, then styles drawn at random (seeded by the index only)."""
    if index < 0:
        raise ValueError("domain index must be >= 0")
    if index < len(_DOMAIN_PRESETS):
        return _DOMAIN_PRESETS[index]
    rng = np.random.default_rng([0xD0, index])
    return DomainStyle(
        name=f"domain-{index}",
        nucleus_scale=round(float(rng.uniform(0.8, 1.3)), 3),
        cellularity=round(float(rng.uniform(-0.4, 1.8)), 3),
        eosin=round(float(rng.uniform(0.7, 1.4)), 3),
        fibres=round(float(rng.uniform(0.2, 1.3)), 3),
        chromatin=round(float(rng.uniform(0.9, 1.1)), 3),
        atypical_weight=round(float(rng.uniform(0.7, 1.3)), 3),
    )


# --------------------------------------------------------------------------------------------- scanner shift


def shifted_profile(profile: ScannerProfile, reference: ScannerProfile, strength: float) -> ScannerProfile:
    """`profile` moved from `reference` by `strength` (0: the reference's looks, 1: `profile` unchanged, > 1:
    exaggerated), clamped to what a scanner can do; the name stays `profile`'s."""
    if strength == 1.0:
        return profile
    s = float(strength)

    def lerp(a: float, b: float, lo: float, hi: float) -> float:
        return min(max(a + s * (b - a), lo), hi)

    def vec(a: Sequence[float], b: Sequence[float], lo: float) -> tuple[float, float, float]:
        return _unit([max(x + s * (y - x), lo) for x, y in zip(a, b, strict=True)])

    if profile.jpeg_quality is not None and reference.jpeg_quality is not None:
        jpeg: int | None = round(lerp(reference.jpeg_quality, profile.jpeg_quality, 20, 98))
    else:
        jpeg = profile.jpeg_quality if s >= 0.5 else reference.jpeg_quality
    return replace(
        profile,
        spacing_mm=round(lerp(reference.spacing_mm, profile.spacing_mm, 0.00008, 0.002), 8),
        stain_h=vec(reference.stain_h, profile.stain_h, 0.02),
        stain_e=vec(reference.stain_e, profile.stain_e, 0.02),
        h_strength=round(lerp(reference.h_strength, profile.h_strength, 0.15, 3.0), 4),
        e_strength=round(lerp(reference.e_strength, profile.e_strength, 0.15, 3.0), 4),
        white=(
            round(lerp(reference.white[0], profile.white[0], 0.5, 1.0), 4),
            round(lerp(reference.white[1], profile.white[1], 0.5, 1.0), 4),
            round(lerp(reference.white[2], profile.white[2], 0.5, 1.0), 4),
        ),
        gamma=round(lerp(reference.gamma, profile.gamma, 0.3, 3.0), 4),
        contrast=round(lerp(reference.contrast, profile.contrast, 0.25, 3.0), 4),
        brightness=round(lerp(reference.brightness, profile.brightness, -0.3, 0.3), 4),
        blur_sigma_px=round(lerp(reference.blur_sigma_px, profile.blur_sigma_px, 0.0, 5.0), 3),
        noise_sigma=round(lerp(reference.noise_sigma, profile.noise_sigma, 0.0, 20.0), 3),
        jpeg_quality=jpeg,
    )


def scanner_profiles(count: int, shift: float = DEFAULT_SHIFT) -> list[ScannerProfile]:
    """Scanners 0..count-1 of synth.py, shifted by `shift` from scanner-0 (which stays as it is)."""
    if shift < 0 or not math.isfinite(shift):
        raise ValueError("shift must be a finite number >= 0")
    reference = scanner_profile(0)
    return [shifted_profile(scanner_profile(i), reference, shift) for i in range(count)]


# --------------------------------------------------------------------------------------------- figures


def _rotate(pos: F64, angle: float) -> F64:
    c, s = math.cos(angle), math.sin(angle)
    return np.stack([pos[:, 0] * c - pos[:, 1] * s, pos[:, 0] * s + pos[:, 1] * c], axis=1)


def _bars(
    rng: np.random.Generator,
    counts: Sequence[int],
    offsets: Sequence[float],
    lengths: Sequence[float],
    um: float,
    thickness: float = 0.6,
) -> F64:
    """Chromosome positions on parallel bars along x: bar i holds counts[i] chromosomes at y = offsets[i]
    (um), spread over +-lengths[i] (um)."""
    parts = []
    for n, off, length in zip(counts, offsets, lengths, strict=True):
        t = rng.uniform(-1, 1, n) * length
        y = off + rng.normal(0, thickness, n)
        parts.append(np.stack([t, y], axis=1))
    return np.concatenate(parts) * um if parts else np.zeros((0, 2))


def figure_shape(rng: np.random.Generator, kind: str, um: float) -> F64:
    """Chromosome (blob) centres in pixels relative to the figure's centre for a figure of `kind`, rotated at
    random. Normal kinds are compact and symmetric; atypical kinds irregular and multi-lobed."""
    if kind == "prometaphase":  # a compact, round clump of chromatin
        k = int(rng.integers(22, 34))
        clumps = rng.normal(0, 1.2, (int(rng.integers(3, 6)), 2))
        pos = (clumps[rng.integers(0, len(clumps), k)] + rng.normal(0, 0.8, (k, 2))) * um
    elif kind == "metaphase":  # one straight plate
        k = int(rng.integers(20, 32))
        pos = _bars(rng, [k], [0.0], [rng.uniform(3.5, 5.0)], um)
    elif kind == "anaphase":  # two parallel plates of equal mass
        half = int(rng.integers(11, 18))
        sep, length = rng.uniform(2.2, 3.2), rng.uniform(3.0, 4.3)
        pos = _bars(rng, [half, half], [-sep, sep], [length, length], um, thickness=0.45)
    elif kind == "telophase":  # two equal compact clumps
        half = int(rng.integers(11, 17))
        sep, length = rng.uniform(2.6, 3.6), rng.uniform(1.5, 2.3)
        pos = _bars(rng, [half, half], [-sep, sep], [length, length], um, thickness=0.7)
    elif kind == "ring":  # polar view of a metaphase: chromosomes on a ring around a clear centre
        k = int(rng.integers(20, 30))
        theta = rng.uniform(0, 2 * math.pi, k)
        r = rng.uniform(2.2, 3.2) + rng.normal(0, 0.3, k)
        pos = np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1) * um
    elif kind == "multipolar":  # three or four arms (metaphase) or poles (anaphase) around the centre
        poles = int(rng.choice([3, 4], p=[0.65, 0.35]))
        angles = np.arange(poles) * (2 * math.pi / poles) + rng.normal(0, 0.25, poles)
        parts = []
        for a in angles:
            n = int(rng.integers(7, 12))
            if rng.uniform() < 0.5:  # an arm of a tri-/tetrapolar plate
                t = rng.uniform(0.6, rng.uniform(3.5, 5.0), n)
                w = rng.normal(0, 0.55, n)
            else:  # a daughter clump at a pole
                t = rng.uniform(3.0, 4.2) + rng.normal(0, 0.7, n)
                w = rng.normal(0, 1.0, n)
            parts.append(_rotate(np.stack([t, w], axis=1), float(a)))
        pos = np.concatenate(parts) * um
    elif kind == "asymmetric":  # bipolar, but the daughters' masses differ two- to fivefold
        k = int(rng.integers(26, 38))
        big = round(k * rng.uniform(0.7, 0.84))
        sep = rng.uniform(2.0, 3.2)
        length = rng.uniform(3.0, 4.5)
        pos = _bars(rng, [big, k - big], [-sep, sep], [length, length * rng.uniform(0.35, 0.6)], um)
    elif kind == "lagging":  # anaphase with chromosomes left behind in the midzone (and a bridge at times)
        half = int(rng.integers(10, 15))
        sep, length = rng.uniform(2.8, 3.8), rng.uniform(2.8, 4.0)
        pos = _bars(rng, [half, half], [-sep, sep], [length, length], um)
        lag = int(rng.integers(2, 6))
        stray = np.stack([rng.uniform(-length - 1.0, length + 1.0, lag), rng.uniform(-0.5, 0.5, lag) * sep], axis=1)
        parts = [pos, stray * um]
        if rng.uniform() < 0.4:
            n = int(rng.integers(6, 10))
            x0 = rng.uniform(-0.5, 0.5) * length
            bridge = np.stack([x0 + rng.normal(0, 0.2, n), np.linspace(-sep, sep, n)], axis=1)
            parts.append(bridge * um)
        pos = np.concatenate(parts)
    elif kind == "scattered":  # irregular, multi-lobed: several clumps of unequal size spread widely
        lobes = int(rng.integers(4, 8))
        centres = rng.normal(0, 2.8, (lobes, 2))
        sizes = rng.integers(3, 9, lobes)
        pos = np.concatenate([c + rng.normal(0, 0.6, (int(n), 2)) for c, n in zip(centres, sizes, strict=True)])
        pos = pos * um
    else:
        raise ValueError(f"unknown figure kind {kind!r}")
    pos = _rotate(np.asarray(pos, dtype=np.float64), float(rng.uniform(0, 2 * math.pi)))
    reach = 7.0 * um  # keep every figure inside its cell (see _FIGURE_REACH_UM)
    r = np.hypot(pos[:, 0], pos[:, 1])
    return pos * np.minimum(1.0, reach / np.maximum(r, 1e-9))[:, None]


def _stamp_figure(
    rng: np.random.Generator,
    h_conc: F32,
    e_conc: F32,
    chroma: F32,
    cx: float,
    cy: float,
    um: float,
    pos: F64,
    darkness: float,
) -> None:
    """Chromosome blobs at `pos` (px, relative to (cx, cy)) saturating to very dark chromatin in a clear halo
    (synth.py's mitotic-figure rendering, with the chromosome positions given)."""
    k = len(pos)
    ang = rng.uniform(0, math.pi, k)
    s_long = rng.uniform(0.7, 1.3, k) * um
    s_short = rng.uniform(0.28, 0.45, k) * um
    extent = float(np.abs(pos).max()) + 2.5 * um if k else 0.0
    halo_r = max(extent + 2.0 * um, 6.5 * um)
    p = _patch(h_conc.shape, cx, cy, halo_r * 1.3)
    if p is None:
        return
    ys, xs, dx, dy = p
    cmax = np.float32(rng.uniform(1.75, 2.4) * darkness)
    r2 = dx * dx + dy * dy
    halo = np.exp(-((r2 / np.float32(halo_r**2)) ** 2))
    e_conc[ys, xs] *= 1.0 - np.float32(rng.uniform(0.35, 0.6)) * halo
    h_conc[ys, xs] *= 1.0 - 0.9 * halo
    # the chromatin only where a blob reaches (4 long sigmas past the outermost centre): a smaller window
    q = _patch(h_conc.shape, cx, cy, extent + 1.5 * um)
    if q is None or k == 0:
        return
    ys, xs, dx, dy = q
    c = np.cos(ang).astype(np.float32)[:, None, None]
    s = np.sin(ang).astype(np.float32)[:, None, None]
    px = dx[None] - pos[:, 0].astype(np.float32)[:, None, None]
    py = dy[None] - pos[:, 1].astype(np.float32)[:, None, None]
    u = (px * c + py * s) / s_long.astype(np.float32)[:, None, None]
    v = (-px * s + py * c) / s_short.astype(np.float32)[:, None, None]
    density = np.exp(-0.5 * (u * u + v * v)).sum(axis=0)
    val = cmax * (1.0 - np.exp(-1.8 * density)) * (1.0 + 0.12 * chroma[ys, xs])
    np.maximum(h_conc[ys, xs], val.astype(np.float32), out=h_conc[ys, xs])


# --------------------------------------------------------------------------------------------- rendering


def _grid(count: int, patch_size: int, um: float) -> tuple[int, int, int]:
    """(columns, rows, cell) of the slide a stack is cut from: one figure per cell, cells far enough apart
    that no figure reaches into a neighbour's patch."""
    cols = math.ceil(math.sqrt(count))
    rows = math.ceil(count / cols)
    reach = math.ceil(_FIGURE_REACH_UM * um)
    gap = max(8, reach - patch_size // 2 + 4)
    return cols, rows, patch_size + gap + (gap % 2)


def render_stack(
    scanner: ScannerProfile,
    style: DomainStyle,
    kinds: Sequence[str],
    *,
    patch_size: int = DEFAULT_PATCH_SIZE,
    seed: int | Sequence[int] | np.random.Generator = 0,
) -> U8:
    """Render one stack: a figure of each of `kinds` (see figure_shape) on one slide of `style` scanned by
    `scanner`, cut into len(kinds) x patch_size x patch_size x 3 uint8 patches centred on the figures."""
    if not kinds:
        raise ValueError("a stack needs at least one patch")
    if patch_size < 32:
        raise ValueError("patch_size must be at least 32 pixels")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    um = 1.0 / (scanner.spacing_mm * 1000.0)  # pixels per micrometre
    cols, rows, cell = _grid(len(kinds), patch_size, um)
    width, height = cols * cell, rows * cell
    centres = [((i % cols) * cell + cell // 2, (i // cols) * cell + cell // 2) for i in range(len(kinds))]
    shapes = [figure_shape(rng, kind, um) for kind in kinds]

    h_conc, e_conc, tissue, cellular, grain, fibre_angle = _draw_background(rng, width, height, um, style)
    nucleus_um = um * style.nucleus_scale
    nuclei = _nucleus_layout(rng, tissue, cellular, (width, height), nucleus_um)
    if len(nuclei):
        pts = np.asarray(centres, dtype=np.float64)
        clear = np.asarray([float(np.abs(s).max()) if len(s) else 0.0 for s in shapes]) + 4.0 * um
        d2 = (nuclei[:, None, 0] - pts[None, :, 0]) ** 2 + (nuclei[:, None, 1] - pts[None, :, 1]) ** 2
        nuclei = nuclei[(d2 > np.maximum(clear, 9.5 * um)[None, :] ** 2).all(axis=1)]
    _stamp_nuclei(rng, h_conc, grain, nuclei, nucleus_um, fibre_angle)
    for (cx, cy), pos in zip(centres, shapes, strict=True):
        _stamp_figure(rng, h_conc, e_conc, grain, float(cx), float(cy), um, pos, style.chromatin)
    rgb = _scan(rng, h_conc, e_conc, scanner)
    return np.stack([cut_patch(rgb, cx, cy, patch_size) for cx, cy in centres])


def _draw_background(
    rng: np.random.Generator, width: int, height: int, um: float, style: DomainStyle
) -> tuple[F32, F32, F32, F32, F32, F32]:
    """Tumour tissue around mitotic figures (synth.py's stroma model, mostly cellular, styled by the domain):
    returns H and E concentrations, the half-resolution tissue and cellularity maps, the chromatin grain and the
    half-resolution fibre angle."""
    shape = (height, width)
    half = (height // 2 + 1, width // 2 + 1)
    uh = um / 2.0
    tissue = _sigmoid((_smooth_noise(rng, half, 60 * uh) + 2.4) * 4.0)
    cellular = _sigmoid(_smooth_noise(rng, half, 40 * uh) * 1.8 + np.float32(style.cellularity))
    fibres, fibre_angle = _fibres(rng, half, uh)
    e0 = rng.uniform(0.30, 0.46) * style.eosin
    stroma = e0 * (0.8 + 0.2 * _smooth_noise(rng, half, 30 * uh))
    stroma *= 1.0 + np.float32(0.45 * style.fibres) * fibres * (1.0 - cellular)
    cytoplasm = (0.8 * e0) * (1.0 + 0.25 * _smooth_noise(rng, half, 6 * uh))
    e_half = np.clip(stroma * (1.0 - cellular) + cytoplasm * cellular, 0.0, None) * tissue
    h_half = (0.03 + 0.03 * cellular) * tissue
    grain = np.asarray(ndi.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), 0.3 * um), np.float32)
    grain /= grain.std() + 1e-6
    e_conc = _upsample2(np.asarray(e_half, dtype=np.float32), shape)
    e_conc *= 1.0 + 0.08 * grain
    e_conc += np.float32(0.02)
    h_conc = _upsample2(np.asarray(h_half, dtype=np.float32), shape)
    h_conc *= np.clip(1.0 + 0.3 * grain, 0.0, None)
    return h_conc, e_conc, tissue, cellular, grain, fibre_angle


# --------------------------------------------------------------------------------------------- test sets


@dataclass(frozen=True)
class _Job:
    out_dir: str
    name: str
    key: tuple[int, int, int, int]  # seed, scanner, domain, stack
    profile: ScannerProfile
    style: DomainStyle
    kinds: tuple[str, ...]
    patch_size: int


@dataclass(frozen=True)
class _Done:
    name: str
    sha256: str
    preview: U8 | None  # the patches, for the preview montage


def _run_job(job: _Job, keep: bool = False) -> _Done:
    patches = render_stack(job.profile, job.style, job.kinds, patch_size=job.patch_size, seed=list(job.key))
    path = Path(job.out_dir) / IMAGES_DIR / job.name
    write_stack_tiff(path, patches, job.profile.spacing_mm)
    return _Done(name=job.name, sha256=sha256_file(path), preview=patches if keep else None)


def _run_job_keep(job: _Job) -> _Done:
    return _run_job(job, keep=True)


def stack_plan(
    seed: int, scanner: int, domain: int, stack: int, style: DomainStyle, max_patches: int, atypical_fraction: float
) -> list[str]:
    """The figure kinds of one stack (its patch count and labels): about 60% of stacks are full, the others
    hold 1..max_patches-1 patches; each patch is atypical with probability atypical_fraction times the
    domain's weight (at most 1)."""
    rng = np.random.default_rng([seed, scanner, domain, stack, 0x1AB])
    n = max_patches if max_patches == 1 or rng.uniform() < 0.6 else int(rng.integers(1, max_patches))
    p = min(max(atypical_fraction * style.atypical_weight, 0.0), 1.0)
    atypical = rng.uniform(0, 1, n) < p
    normal_kinds = rng.choice(len(NORMAL_FIGURES), n, p=_NORMAL_P)
    atypical_kinds = rng.choice(len(ATYPICAL_FIGURES), n, p=_ATYPICAL_P)
    return [
        ATYPICAL_FIGURES[int(a)] if is_atypical else NORMAL_FIGURES[int(b)]
        for is_atypical, a, b in zip(atypical, atypical_kinds, normal_kinds, strict=True)
    ]


def label_of(kind: str) -> str:
    if kind in ATYPICAL_FIGURES:
        return ATYPICAL
    if kind in NORMAL_FIGURES:
        return NORMAL
    raise ValueError(f"unknown figure kind {kind!r}")


def generate_classification_set(
    out_dir: str | os.PathLike[str],
    *,
    scanners: int | Sequence[ScannerProfile] = 4,
    domains: int | Sequence[DomainStyle] = 3,
    stacks_per_domain: int = 4,
    max_patches: int = MAX_PATCHES,
    patch_size: int = DEFAULT_PATCH_SIZE,
    atypical_fraction: float = DEFAULT_ATYPICAL_FRACTION,
    shift: float = DEFAULT_SHIFT,
    seed: int = 0,
    preview: bool = False,
    progress: Progress | None = None,
    workers: int = 1,
) -> TestSet:
    """Write a synthetic classification test set (layout: worker.datasets.stacks) to `out_dir` and return it.

    Stacks are numbered stack_1.tiff, stack_2.tiff, ... scanner by scanner, domain by domain; each holds
    1..max_patches patches of one scanner and one tumour domain (integer = the domain's index). When the
    whole set would hold a single class, the first patch of the first stack is switched to the other, so
    both classes are there (the scoring needs both). `scanners` given as profiles are used as they are
    (`shift` applies to counts only). `workers` > 1 renders in processes; the bytes do not depend on it.
    """
    root = Path(out_dir)
    profiles = scanner_profiles(scanners, shift) if isinstance(scanners, int) else list(scanners)
    styles = [domain_style(i) for i in range(domains)] if isinstance(domains, int) else list(domains)
    if not profiles or not styles or stacks_per_domain < 1:
        raise ValueError("need at least one scanner, one tumour domain and one stack per domain")
    if not 1 <= max_patches <= MAX_PATCHES:
        raise ValueError(f"max_patches must be 1..{MAX_PATCHES}")
    if not 0.0 <= atypical_fraction <= 1.0:
        raise ValueError("atypical_fraction must be within 0..1")
    if len({p.name for p in profiles}) != len(profiles):
        raise ValueError("scanner names must be unique")

    plans: list[tuple[int, int, int, list[str]]] = []
    for s in range(len(profiles)):
        for d, style in enumerate(styles):
            for k in range(stacks_per_domain):
                plans.append((s, d, k, stack_plan(seed, s, d, k, style, max_patches, atypical_fraction)))
    labels = [label_of(kind) for *_, kinds in plans for kind in kinds]
    if len(labels) >= 2 and len(set(labels)) == 1:
        first = plans[0][3]
        first[0] = ATYPICAL_FIGURES[0] if labels[0] == NORMAL else NORMAL_FIGURES[1]

    (root / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    preview_of = {s: next(i for i, plan in enumerate(plans) if plan[0] == s) for s in range(len(profiles))}
    jobs = [
        _Job(
            out_dir=str(root),
            name=f"stack_{i + 1}.tiff",
            key=(int(seed), s, d, k),
            profile=profiles[s],
            style=styles[d],
            kinds=tuple(kinds),
            patch_size=int(patch_size),
        )
        for i, (s, d, k, kinds) in enumerate(plans)
    ]
    keep = {jobs[i].name for i in preview_of.values()} if preview else set()
    done: dict[str, _Done] = {}
    total = len(jobs)
    if progress is not None:
        progress(0, total)
    if workers > 1 and total > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(workers, total), mp_context=ctx) as pool:
            runs = [pool.submit(_run_job_keep if j.name in keep else _run_job, j) for j in jobs]
            for run in runs:
                result = run.result()
                done[result.name] = result
                if progress is not None:
                    progress(len(done), total)
    else:
        for job in jobs:
            done[job.name] = _run_job(job, keep=job.name in keep)
            if progress is not None:
                progress(len(done), total)

    cases: list[Case] = []
    truth: list[StackTruth] = []
    rows: list[dict[str, Any]] = []
    for job, (s, d, _, kinds) in zip(jobs, plans, strict=True):
        profile = profiles[s]
        domains_here = [d] * len(kinds)
        cases.append(
            Case(
                name=job.name,
                image=f"{IMAGES_DIR}/{job.name}",
                scanner=profile.name,
                width=job.patch_size,
                height=job.patch_size,
                spacing_mm=profile.spacing_mm,
                sha256=done[job.name].sha256,
                groups=stack_groups(profile.name, domains_here),
                patches=len(kinds),
            )
        )
        truth.append(StackTruth(job.name, tuple(label_of(k) for k in kinds), tuple(domains_here)))
        for page, kind in enumerate(kinds):
            rows.append(
                {
                    "stack": job.name,
                    "page": page,
                    "label": label_of(kind),
                    "tumor_domain": d,
                    "scanner": profile.name,
                    "figure": kind,
                }
            )
    manifest = Manifest(
        name=f"synthetic-classification-seed{seed}",
        cases=tuple(cases),
        task=CLASSIFICATION,
        source={
            "kind": "synthetic-classification",
            "generator_version": GENERATOR_VERSION,
            "seed": int(seed),
            "patch_size": int(patch_size),
            "max_patches": int(max_patches),
            "stacks_per_domain": int(stacks_per_domain),
            "atypical_fraction": float(atypical_fraction),
            "shift": float(shift),
            "scanners": [p.to_json() for p in profiles],
            "tumor_domains": {str(i): style.to_json() for i, style in enumerate(styles)},
        },
    )
    test_set = write_classification_test_set(root, manifest, truth, patches_csv=rows)
    if preview:
        tiles = []
        for s, index in preview_of.items():
            result = done[jobs[index].name]
            assert result.preview is not None
            tiles.append((profiles[s].name, result.preview, [label_of(k) for k in jobs[index].kinds]))
        write_stack_montage(root / PREVIEW_NAME, tiles)
    return test_set


# --------------------------------------------------------------------------------------------- preview


def write_stack_montage(path: Path, rows: Sequence[tuple[str, U8, Sequence[str]]], *, per_row: int = 8) -> None:
    """One row per scanner: up to `per_row` patches of a stack, atypical framed red, normal framed green."""
    from PIL import Image, ImageDraw, ImageFont

    size = max(p.shape[1] for _, p, _ in rows)
    gap, label_w, frame = 4, 110, 3
    cols = min(per_row, max(len(p) for _, p, _ in rows))
    width = label_w + cols * (size + gap) + gap
    height = len(rows) * (size + gap) + gap
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=13)
    for r, (name, patches, labels) in enumerate(rows):
        y = gap + r * (size + gap)
        draw.text((4, y + size // 2 - 8), name, fill="black", font=font)
        for c, (patch, label) in enumerate(zip(patches[:cols], labels, strict=False)):
            x = label_w + gap + c * (size + gap)
            canvas.paste(Image.fromarray(patch), (x, y))
            colour = (220, 30, 30) if label == ATYPICAL else (30, 170, 30)
            draw.rectangle((x, y, x + patch.shape[1] - 1, y + patch.shape[0] - 1), outline=colour, width=frame)
    canvas.save(path, format="PNG", optimize=True)


__all__ = [
    "ATYPICAL_FIGURES",
    "DEFAULT_ATYPICAL_FRACTION",
    "DEFAULT_SHIFT",
    "NORMAL_FIGURES",
    "DomainStyle",
    "domain_style",
    "figure_shape",
    "generate_classification_set",
    "label_of",
    "render_stack",
    "scanner_profiles",
    "shifted_profile",
    "stack_plan",
    "write_stack_montage",
]
