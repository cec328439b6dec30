"""Blur corruptions: defocus, glass, motion and zoom blur, with the CIFAR-10-C parameters of
``make_cifar_c.py`` (hendrycks/robustness), in pixels as there (see the package notes on size).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from robprune_deploy.evaluation.corruptions._common import (
    blur_spatial,
    clipped_zoom,
    correlate_spatial,
    gaussian_kernel_1d,
    magick_motion_blur,
)

DEFOCUS = ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1))
"""Disk radius and the Gaussian that anti-aliases it."""
GLASS = ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2))
"""Gaussian sigma, largest pixel displacement, shuffle passes."""
MOTION = ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5))
"""ImageMagick motion-blur radius and sigma."""
ZOOM_STOPS = (1.06, 1.11, 1.16, 1.21, 1.26)
"""Zoom factors ``np.arange(1, stop, 0.01)`` (float ``arange`` includes ``1.06`` at severity 1, as
in the reference)."""


def disk(radius: float, alias_blur: float) -> np.ndarray:
    """The reference's ``disk``: a normalized aliased disk on a 17 x 17 grid (larger for radii
    above 8), smoothed by a 3 x 3 (5 x 5) Gaussian of sigma ``alias_blur`` (OpenCV ``GaussianBlur``,
    ``REFLECT_101`` border), cropped to its non-zero support."""
    half = 8 if radius <= 8 else int(radius)
    size = 3 if radius <= 8 else 5
    grid = np.arange(-half, half + 1)
    xx, yy = np.meshgrid(grid, grid)
    aliased = (xx**2 + yy**2 <= radius**2).astype(np.float64)
    aliased /= aliased.sum()
    smooth = gaussian_kernel_1d(size, alias_blur)
    kernel = ndimage.correlate1d(
        ndimage.correlate1d(aliased, smooth, axis=0, mode="mirror"), smooth, axis=1, mode="mirror"
    )
    extent = int(np.abs(np.argwhere(kernel > 0) - half).max())
    return kernel[half - extent : half + extent + 1, half - extent : half + extent + 1]


def defocus_blur(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Correlation with an anti-aliased disk (deterministic: ``rng`` is not used)."""
    radius, alias_blur = DEFOCUS[severity - 1]
    return np.clip(correlate_spatial(x, disk(radius, alias_blur)), 0, 1)


def glass_blur(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Gaussian blur, local pixel shuffling, Gaussian blur again.

    As the reference: the first blur is stored as 8-bit (truncated), and the shuffle visits the
    pixels from the bottom-right corner inwards (``max_delta`` away from the borders), each taking
    the pixel ``(dy, dx)`` away, ``dy, dx`` uniform in ``[-max_delta, max_delta)``. The reference
    writes ``x[h, w], x[h', w'] = x[h', w'], x[h, w]`` on an RGB array, where both right-hand
    sides are views, so the second assignment rewrites the value just copied: a copy, not a swap.
    CIFAR-10-C was made that way, and so is this (for every channel count).
    """
    sigma, delta, passes = GLASS[severity - 1]
    n, _, h, w = x.shape
    shuffled = np.floor(np.clip(blur_spatial(x, sigma, "nearest"), 0, 1) * 255)
    images = np.arange(n)
    for _ in range(passes):
        for row in range(h - delta, delta, -1):
            for col in range(w - delta, delta, -1):
                dx, dy = rng.integers(-delta, delta, size=(2, n))
                shuffled[images, :, row, col] = shuffled[images, :, row + dy, col + dx]
    return np.clip(blur_spatial(shuffled / 255.0, sigma, "nearest"), 0, 1)


def motion_blur(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """ImageMagick's one-sided motion blur at an angle uniform in [-45, 45] degrees per image."""
    radius, sigma = MOTION[severity - 1]
    return np.clip(magick_motion_blur(x, radius, sigma, rng.uniform(-45, 45, size=len(x))), 0, 1)


def zoom_blur(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """The mean of the image and its central zooms by each factor (deterministic)."""
    factors = np.arange(1, ZOOM_STOPS[severity - 1], 0.01)
    out = np.zeros_like(x)
    for factor in factors:
        out += clipped_zoom(x, float(factor))
    return np.clip((x + out) / (len(factors) + 1), 0, 1)
