"""Helpers shared by the corruptions, on ``N x C x H x W`` float64 arrays in [0, 1].

Each replaces a library call of the reference (hendrycks/robustness,
``ImageNet-C/create_c/make_cifar_c.py``) with numpy, scipy or PIL, which this project already
depends on: OpenCV's ``GaussianBlur``/``filter2D`` (border ``REFLECT_101``, scipy's ``mirror``),
scikit-image's ``gaussian`` (scipy's ``gaussian_filter``) and ImageMagick's motion blur (Wand).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

LUMA = np.array([0.299, 0.587, 0.114])
"""OpenCV's ``RGB2GRAY`` weights (ITU-R BT.601), as the reference's grey conversions use."""


def gray(x: np.ndarray) -> np.ndarray:
    """``N x 1 x H x W`` luminance (the image itself when it has one channel)."""
    return x if x.shape[1] == 1 else np.einsum("nchw,c->nhw", x, LUMA)[:, None]


def blur_spatial(x: np.ndarray, sigma: float, mode: str, truncate: float = 4.0) -> np.ndarray:
    """Gaussian filter over the two spatial axes only (scikit-image's ``gaussian`` per channel)."""
    return ndimage.gaussian_filter(x, sigma=(0, 0, sigma, sigma), mode=mode, truncate=truncate)


def gaussian_kernel_1d(size: int, sigma: float) -> np.ndarray:
    """OpenCV's ``getGaussianKernel(size, sigma)``: ``exp(-(i - (size-1)/2)^2 / (2 sigma^2))``, summing to 1."""
    i = np.arange(size) - (size - 1) / 2
    kernel = np.exp(-(i**2) / (2 * sigma**2))
    return kernel / kernel.sum()


def correlate_spatial(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """OpenCV's ``filter2D`` (correlation, anchor at the centre, ``REFLECT_101`` border) per channel."""
    return ndimage.correlate(x, kernel[None, None], mode="mirror")


def _interpolate_axis(x: np.ndarray, axis: int, size: int) -> np.ndarray:
    """Linear resampling of ``axis`` to ``size`` samples with the end points aligned: output ``o``
    reads input ``o (n - 1) / (size - 1)`` (``scipy.ndimage.zoom(order=1)``, ``grid_mode=False``)."""
    n = x.shape[axis]
    if size == n:
        return x
    where = np.arange(size) * ((n - 1) / (size - 1) if size > 1 else 0.0)
    below = np.clip(np.floor(where).astype(np.int64), 0, n - 1)
    above = np.minimum(below + 1, n - 1)
    frac = (where - below).reshape([-1 if a == axis % x.ndim else 1 for a in range(x.ndim)])
    return np.take(x, below, axis=axis) * (1 - frac) + np.take(x, above, axis=axis) * frac


def zoom_bilinear(x: np.ndarray, factor: float) -> np.ndarray:
    """Each image zoomed by ``factor`` over its two spatial axes, bilinear: the same numbers as
    ``scipy.ndimage.zoom(x, (1, 1, factor, factor), order=1, mode="nearest")`` (the output side is
    the rounded ``side * factor``), at a fraction of its cost on a batch.

    The reference calls ``zoom`` with its default ``mode="constant"``, where rounding can put the
    last sample just past the edge and read 0 there (a dark last row or column for some factors,
    usually cropped away by :func:`clipped_zoom`); here the edge sample is the edge pixel.
    """
    h, w = x.shape[2:]
    return _interpolate_axis(_interpolate_axis(x, 2, round(h * factor)), 3, round(w * factor))


def clipped_zoom(x: np.ndarray, factor: float) -> np.ndarray:
    """Zoom the central ``1/factor`` of each image back to full size (bilinear), as the reference's
    ``clipped_zoom`` (which assumes square images; here height and width are cropped separately)."""
    h, w = x.shape[2:]
    ch, cw = math.ceil(h / factor), math.ceil(w / factor)
    top, left = (h - ch) // 2, (w - cw) // 2
    zoomed = zoom_bilinear(x[:, :, top : top + ch, left : left + cw], factor)
    trim_top, trim_left = (zoomed.shape[2] - h) // 2, (zoomed.shape[3] - w) // 2
    return zoomed[:, :, trim_top : trim_top + h, trim_left : trim_left + w]


def plasma_fractal(rng: np.random.Generator, count: int, mapsize: int, wibbledecay: float) -> np.ndarray:
    """``count x mapsize x mapsize`` diamond-square height maps in [0, 1] (the reference's
    ``plasma_fractal``, drawn for ``count`` images at once; ``mapsize`` a power of two)."""
    if mapsize & (mapsize - 1):
        raise ValueError(f"plasma_fractal: mapsize must be a power of two, got {mapsize}")
    grid = np.zeros((count, mapsize, mapsize))
    step, wibble = mapsize, 100.0

    def wibbled_mean(total: np.ndarray) -> np.ndarray:
        return total / 4 + wibble * rng.uniform(-wibble, wibble, total.shape)

    while step >= 2:
        half = step // 2
        corners = grid[:, 0:mapsize:step, 0:mapsize:step]
        squares = corners + np.roll(corners, -1, axis=1)
        squares = squares + np.roll(squares, -1, axis=2)
        grid[:, half:mapsize:step, half:mapsize:step] = wibbled_mean(squares)
        centres = grid[:, half:mapsize:step, half:mapsize:step]
        corners = grid[:, 0:mapsize:step, 0:mapsize:step]
        left_sum = centres + np.roll(centres, 1, axis=1) + corners + np.roll(corners, -1, axis=2)
        grid[:, 0:mapsize:step, half:mapsize:step] = wibbled_mean(left_sum)
        top_sum = centres + np.roll(centres, 1, axis=2) + corners + np.roll(corners, -1, axis=1)
        grid[:, half:mapsize:step, 0:mapsize:step] = wibbled_mean(top_sum)
        step //= 2
        wibble /= wibbledecay
    grid -= grid.min(axis=(1, 2), keepdims=True)
    return grid / grid.max(axis=(1, 2), keepdims=True)


def fractal_for(rng: np.random.Generator, count: int, h: int, w: int, wibbledecay: float) -> np.ndarray:
    """``count x 1 x h x w``: a plasma fractal of the smallest power-of-two size (at least 32, the
    reference's CIFAR size) covering the image, cropped to it as the reference crops ``[:32, :32]``."""
    size = 32
    while size < max(h, w):
        size *= 2
    return plasma_fractal(rng, count, size, wibbledecay)[:, None, :h, :w]


def magick_motion_blur(x: np.ndarray, radius: float, sigma: float, angles: np.ndarray) -> np.ndarray:
    """ImageMagick's ``MotionBlurImage`` (the reference calls it through Wand), one angle (degrees)
    per image.

    The kernel is one-sided: ``width = 2 ceil(radius) + 1`` taps weighted ``exp(-i^2 / (2 sigma^2))``
    (normalized), tap ``i`` reading the pixel ``(round(i sin a), round(i cos a))`` rows and columns
    away; pixels beyond the border repeat the edge (ImageMagick's default virtual pixels).
    """
    n, _, h, w = x.shape
    width = 2 * math.ceil(radius) + 1
    taps = np.arange(width)
    kernel = np.exp(-(taps**2) / (2 * sigma**2))
    kernel /= kernel.sum()
    radians = np.deg2rad(angles)
    out = np.zeros_like(x)
    images = np.arange(n)[:, None, None, None]
    channels = np.arange(x.shape[1])[None, :, None, None]
    for i, weight in zip(taps, kernel, strict=True):
        dc = np.ceil(i * np.cos(radians) - 0.5).astype(np.int64)
        dr = np.ceil(i * np.sin(radians) - 0.5).astype(np.int64)
        rows = np.clip(np.arange(h)[None, :] + dr[:, None], 0, h - 1)
        cols = np.clip(np.arange(w)[None, :] + dc[:, None], 0, w - 1)
        out += weight * x[images, channels, rows[:, None, :, None], cols[:, None, None, :]]
    return out


def to_uint8_levels(x: np.ndarray) -> np.ndarray:
    """``x`` rounded to the 256 levels of an 8-bit image (a PNG or JPEG round trip of the reference)."""
    return np.round(np.clip(x, 0.0, 1.0) * 255.0) / 255.0
