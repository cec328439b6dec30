"""Weather corruptions: snow, frost and fog, with the CIFAR-10-C parameters of
``make_cifar_c.py`` (hendrycks/robustness).

Frost is a substitute. The reference blends a random crop of one of five photographs of frost
(``frost1.png`` ... ``frost5.jpg``, shrunk to 0.2 of their size) into the image; those photographs
ship with the reference's repository, not with any package this project installs. Here the frost
layer is procedural: the mean colour and the contrast (standard deviation) of one of the five
photographs, measured at the reference's scale and listed in :data:`FROST_SHEETS`, modulated by a
texture whose pixel-to-pixel correlation follows the photographs' (about 0.9, 0.8, 0.7, 0.6 at 1,
2, 4 and 8 pixels): a plasma fractal (long-range) plus a little smoothed noise (crystal grain).
The blend weights are the reference's. Figures for frost are therefore close to, not comparable
with, published CIFAR-10-C frost figures.
"""

from __future__ import annotations

import numpy as np

from robprune_deploy.evaluation.corruptions._common import (
    blur_spatial,
    clipped_zoom,
    fractal_for,
    gray,
    magick_motion_blur,
    plasma_fractal,
)

SNOW = (
    (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
    (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
    (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
    (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
    (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
)
"""Flake mean and spread, zoom, threshold, motion-blur radius and sigma, image weight."""
FROST = ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45))
"""Image weight, frost weight."""
FROST_SHEETS = (
    ((0.305, 0.585, 0.650), 0.065),
    ((0.787, 0.805, 0.841), 0.071),
    ((0.787, 0.805, 0.841), 0.071),
    ((0.540, 0.599, 0.648), 0.084),
    ((0.441, 0.484, 0.528), 0.137),
)
"""Mean RGB and standard deviation of the reference's ``frost1.png`` ... ``frost5.jpg`` shrunk to
0.2 (``frost2`` and ``frost3`` have the same pixels); the reference picks one of the five at random."""
FROST_GRAIN = 0.15
"""Share of the texture's variance that is fine grain (Gaussian noise smoothed by sigma 0.7 px)."""
FOG = ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75))
"""Fog strength, fractal roughness (``wibbledecay``)."""


def snow(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Thresholded, zoomed Gaussian flakes, motion-blurred at an angle in [-135, -45] degrees and
    added twice (the second copy rotated by 180 degrees) to an image lightened towards its grey."""
    loc, scale, zoom, threshold, radius, sigma, weight = SNOW[severity - 1]
    n, _, h, w = x.shape
    layer = clipped_zoom(rng.normal(loc, scale, size=(n, 1, h, w)), zoom)
    layer[layer < threshold] = 0
    # the reference stores the layer as an 8-bit PNG (truncated), and Wand returns 8-bit again
    layer = np.floor(np.clip(layer, 0, 1) * 255) / 255
    layer = (
        np.round(np.clip(magick_motion_blur(layer, radius, sigma, rng.uniform(-135, -45, size=len(x))), 0, 1) * 255)
        / 255
    )
    lightened = weight * x + (1 - weight) * np.maximum(x, gray(x) * 1.5 + 0.5)
    return np.clip(lightened + layer + layer[:, :, ::-1, ::-1], 0, 1)


def frost_layer(rng: np.random.Generator, n: int, h: int, w: int) -> np.ndarray:
    """``n x 3 x h x w`` procedural frost in [0, 1] (see the module's notes)."""
    size = 64
    while size < 2 * max(h, w):
        size *= 2
    base = plasma_fractal(rng, n, size, 1.5)[:, None, :h, :w]
    grain = blur_spatial(rng.normal(size=(n, 1, h, w)), 0.7, "reflect")

    def standard(t: np.ndarray) -> np.ndarray:
        return (t - t.mean(axis=(2, 3), keepdims=True)) / (t.std(axis=(2, 3), keepdims=True) + 1e-12)

    texture = np.sqrt(1 - FROST_GRAIN) * standard(base) + np.sqrt(FROST_GRAIN) * standard(grain)
    sheets = rng.integers(0, len(FROST_SHEETS), size=n)
    mean = np.array([FROST_SHEETS[k][0] for k in sheets])[:, :, None, None]
    spread = np.array([FROST_SHEETS[k][1] for k in sheets])[:, None, None, None]
    return np.clip(mean + spread * texture, 0, 1)


def frost(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """``a x + b frost`` with the reference's weights and the procedural frost layer (its
    luminance for grey images)."""
    image_weight, frost_weight = FROST[severity - 1]
    n, c, h, w = x.shape
    layer = frost_layer(rng, n, h, w)
    if c == 1:
        layer = gray(layer)
    return np.clip(image_weight * x + frost_weight * layer, 0, 1)


def fog(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """A plasma fractal added to every channel, the result rescaled by ``max / (max + strength)``."""
    strength, decay = FOG[severity - 1]
    n, _, h, w = x.shape
    top = x.max(axis=(1, 2, 3), keepdims=True)
    fogged = x + strength * fractal_for(rng, n, h, w, decay)
    return np.clip(fogged * top / (top + strength), 0, 1)
