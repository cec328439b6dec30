"""Noise corruptions: Gaussian, shot (Poisson) and impulse (salt-and-pepper) noise, with the
CIFAR-10-C parameters of ``make_cifar_c.py`` (hendrycks/robustness). None has a spatial
parameter, so they apply unchanged to any image size.
"""

from __future__ import annotations

import numpy as np

GAUSSIAN_SCALE = (0.04, 0.06, 0.08, 0.09, 0.10)
SHOT_PHOTONS = (500, 250, 100, 75, 50)
IMPULSE_AMOUNT = (0.01, 0.02, 0.03, 0.05, 0.07)


def gaussian_noise(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """``x + N(0, c^2)`` per pixel and channel."""
    return np.clip(x + rng.normal(size=x.shape, scale=GAUSSIAN_SCALE[severity - 1]), 0, 1)


def shot_noise(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """``Poisson(c x) / c``: photon noise with ``c`` photons at full intensity."""
    photons = SHOT_PHOTONS[severity - 1]
    return np.clip(rng.poisson(x * photons) / photons, 0, 1)


def impulse_noise(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Salt and pepper: each value (pixel and channel) replaced with probability ``amount``, by 0
    or 1 with equal odds (scikit-image's ``random_noise(mode='s&p')``, which the reference calls)."""
    flipped = rng.random(x.shape) <= IMPULSE_AMOUNT[severity - 1]
    salted = rng.random(x.shape) <= 0.5
    out = x.copy()
    out[flipped & salted] = 1.0
    out[flipped & ~salted] = 0.0
    return out
