"""Measures of an H&E image or tile: optical density, stain vectors (Macenko), stain concentrations
(Ruifrok-Johnston deconvolution), sharpness and the tile features of the domain report. numpy and scipy only."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from scipy import ndimage as ndi

F64 = npt.NDArray[np.float64]
U8 = npt.NDArray[np.uint8]

OD_THRESHOLD = 0.15  # Macenko's beta: pixels with an OD below it in any channel are near-white background
# Ruifrok & Johnston (Anal Quant Cytol Histol 2001), H&E: unit OD vectors (R, G, B), as in scikit-image's rgb2hed
RUIFROK_H = (0.65, 0.70, 0.29)
RUIFROK_E = (0.07, 0.99, 0.11)
GREY_BINS = 6  # grey-level histogram bins of a tile, over [0, 1]
FEATURES = (
    "od_r_mean",
    "od_g_mean",
    "od_b_mean",
    "od_r_std",
    "od_g_std",
    "od_b_std",
    "h_mean",
    "e_mean",
    "laplacian_var",
    "gradient_mean",
    *(f"grey_bin_{i}" for i in range(GREY_BINS)),
)


def optical_density(rgb: U8) -> F64:
    """Optical density per channel, -ln((I + 1) / 256): 0 for white, about 5.5 for black (N x 3 or H x W x 3)."""
    return -np.log((np.asarray(rgb, dtype=np.float64) + 1.0) / 256.0)


def macenko_stain_vectors(
    rgb: U8, *, beta: float = OD_THRESHOLD, alpha: float = 1.0, max_pixels: int = 200_000, seed: int = 0
) -> tuple[F64, F64]:
    """Haematoxylin and eosin unit OD vectors (R, G, B) of an H&E image by Macenko's method.

    Macenko M, Niethammer M, Marron JS, et al. "A method for normalizing histology slides for quantitative
    analysis", IEEE ISBI 2009: convert to optical density, discard near-white pixels (OD < beta in any channel),
    project the rest onto the plane of the two largest singular vectors, take the angles at the alpha and
    100 - alpha percentiles as the two stains; the one with the larger red OD is haematoxylin.
    `rgb` is H x W x 3 or N x 3 uint8; at most `max_pixels` tissue pixels are used (seeded draw).
    """
    od = optical_density(np.asarray(rgb).reshape(-1, 3))
    od = od[np.all(od >= beta, axis=1)]
    if len(od) < 10:
        raise ValueError("too few tissue pixels for Macenko's method")
    if len(od) > max_pixels:
        od = od[np.random.default_rng(seed).choice(len(od), max_pixels, replace=False)]
    # the plane through the origin spanned by the two largest right singular vectors (Macenko: eigenvectors of
    # the OD covariance; the SVD of the uncentred ODs keeps the stain directions, which pass through 0)
    _, _, vt = np.linalg.svd(od, full_matrices=False)
    plane = vt[:2].T.copy()  # 3 x 2
    if plane[:, 0].sum() < 0:  # the first vector into the positive octant: the stains' angles then lie within
        plane[:, 0] *= -1  # (-pi/2, pi/2) and never wrap around
    proj = od @ plane
    phi = np.arctan2(proj[:, 1], proj[:, 0])
    lo, hi = np.percentile(phi, [alpha, 100.0 - alpha])
    v1 = plane @ np.array([math.cos(lo), math.sin(lo)])
    v2 = plane @ np.array([math.cos(hi), math.sin(hi)])
    v1 = v1 / np.linalg.norm(v1) * (1.0 if v1.sum() >= 0 else -1.0)
    v2 = v2 / np.linalg.norm(v2) * (1.0 if v2.sum() >= 0 else -1.0)
    return (v1, v2) if v1[0] > v2[0] else (v2, v1)


def ruifrok_matrix() -> F64:
    """Rows: haematoxylin, eosin, and their cross product (the residual channel), unit OD vectors."""
    h = np.asarray(RUIFROK_H) / np.linalg.norm(RUIFROK_H)
    e = np.asarray(RUIFROK_E) / np.linalg.norm(RUIFROK_E)
    r = np.cross(h, e)
    return np.stack([h, e, r / np.linalg.norm(r)])


_UNMIX = np.linalg.inv(ruifrok_matrix())


def stain_concentrations(od: F64) -> F64:
    """Haematoxylin and eosin concentrations (..., 2) of optical densities (..., 3), fixed Ruifrok vectors."""
    return np.asarray(od @ _UNMIX)[..., :2]


def grey(rgb: U8) -> F64:
    """Luma (ITU-R BT.601) in [0, 255]."""
    a = np.asarray(rgb, dtype=np.float64)
    return 0.299 * a[..., 0] + 0.587 * a[..., 1] + 0.114 * a[..., 2]


def laplacian_variance(rgb: U8) -> float:
    """Sharpness: the variance of the Laplacian (4-neighbour) of the grey image, borders excluded."""
    lap = ndi.laplace(grey(rgb))
    return float(lap[1:-1, 1:-1].var())


def tile_features(rgb: U8) -> F64:
    """The FEATURES of one tile: colour (OD mean and std per channel, H and E means) and texture (Laplacian
    variance, mean Sobel gradient magnitude, grey-level histogram)."""
    od = optical_density(rgb).reshape(-1, 3)
    conc = stain_concentrations(od)
    g = grey(rgb)
    grad = np.hypot(ndi.sobel(g, axis=0), ndi.sobel(g, axis=1))[1:-1, 1:-1] / 8.0
    hist, _ = np.histogram(g / 255.0, bins=GREY_BINS, range=(0.0, 1.0))
    return np.concatenate(
        [
            od.mean(axis=0),
            od.std(axis=0),
            conc.mean(axis=0),
            [laplacian_variance(rgb), float(grad.mean())],
            hist / g.size,
        ]
    )
