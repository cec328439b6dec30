"""Digital corruptions: brightness, contrast, elastic transform, pixelate and JPEG compression,
with the CIFAR-10-C parameters of ``make_cifar_c.py`` (hendrycks/robustness).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from scipy import ndimage

from robprune_deploy.evaluation.corruptions._common import blur_spatial

BRIGHTNESS = (0.05, 0.1, 0.15, 0.2, 0.3)
"""Added to the HSV value."""
CONTRAST = (0.75, 0.5, 0.4, 0.3, 0.15)
"""Factor on the distance to the per-channel mean."""
ELASTIC = ((0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05), (0.1, 0.03, 0.03))
"""Displacement strength, displacement smoothness (sigma), affine jitter, as fractions of the
image size (the reference writes them as multiples of ``IMSIZE``)."""
PIXELATE = (0.95, 0.9, 0.85, 0.75, 0.65)
"""Downscale factor before scaling back up (box filter both ways)."""
JPEG_QUALITY = (80, 65, 58, 50, 40)


def brightness(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Add ``c`` to the HSV value, clipped to 1 (deterministic).

    With hue and saturation fixed every RGB component is proportional to the value ``V = max(R,
    G, B)``, so the reference's RGB -> HSV -> RGB round trip is ``x min(V + c, 1) / V``; a black
    pixel (``V = 0``, saturation 0) becomes grey ``c``. On one channel ``V`` is the pixel itself.
    """
    c = BRIGHTNESS[severity - 1]
    value = x.max(axis=1, keepdims=True)
    lifted = np.minimum(value + c, 1.0)
    scale = np.divide(lifted, value, out=np.zeros_like(value), where=value > 0)
    return np.clip(np.where(value > 0, x * scale, lifted), 0, 1)


def contrast(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """``(x - mean) c + mean`` with each image's per-channel mean (deterministic)."""
    means = x.mean(axis=(2, 3), keepdims=True)
    return np.clip((x - means) * CONTRAST[severity - 1] + means, 0, 1)


def _affine_from_points(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``A``, ``t`` with ``A src_i + t = dst_i`` for three ``(x, y)`` points (OpenCV's
    ``getAffineTransform``)."""
    solved = np.linalg.solve(np.c_[src, np.ones(3)], dst)  # rows: A^T, then t
    return solved[:2].T, solved[2]


def elastic_transform(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """A random affine warp of three points (``REFLECT_101`` border, bilinear), then a smooth
    random displacement field (bilinear, reflected border), per image, as the reference.

    The reference's OpenCV ``warpAffine`` maps each output pixel through the inverse of the affine
    fitted from the jittered points; scipy's ``affine_transform`` takes that inverse in (row,
    column) order.
    """
    strength, smooth, jitter = (f * min(x.shape[2:]) for f in ELASTIC[severity - 1])
    n, c, h, w = x.shape
    out = np.empty_like(x)
    centre = np.array([w // 2, h // 2], dtype=np.float64)
    side = min(h, w) // 3
    src = np.array([centre + side, [centre[0] + side, centre[1] - side], centre - side])
    swap = np.array([[0.0, 1.0], [1.0, 0.0]])  # (x, y) <-> (row, column)
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    for i in range(n):
        dst = src + rng.uniform(-jitter, jitter, size=src.shape)
        a, t = _affine_from_points(src, dst)
        inverse = np.linalg.inv(a)
        matrix, offset = swap @ inverse @ swap, -(swap @ inverse @ t)
        warped = np.stack([ndimage.affine_transform(x[i, k], matrix, offset, order=1, mode="mirror") for k in range(c)])
        field = rng.uniform(-1, 1, size=(2, 1, 1, h, w))
        dx = blur_spatial(field[0], smooth, "reflect", truncate=3.0)[0, 0] * strength
        dy = blur_spatial(field[1], smooth, "reflect", truncate=3.0)[0, 0] * strength
        coords = np.stack([rows + dy, cols + dx])
        out[i] = np.stack([ndimage.map_coordinates(warped[k], coords, order=1, mode="reflect") for k in range(c)])
    return np.clip(out, 0, 1)


def _resize_box(channel: np.ndarray, width: int, height: int) -> np.ndarray:
    image = Image.fromarray(channel.astype(np.float32))
    return np.asarray(image.resize((width, height), Image.Resampling.BOX), dtype=np.float64)


def pixelate(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Box-filter down to ``int(size c)`` and back up (PIL ``BOX``, on float images; deterministic)."""
    n, c, h, w = x.shape
    factor = PIXELATE[severity - 1]
    small_w, small_h = max(int(w * factor), 1), max(int(h * factor), 1)
    out = np.empty_like(x)
    for i in range(n):
        for k in range(c):
            out[i, k] = _resize_box(_resize_box(x[i, k], small_w, small_h), w, h)
    return np.clip(out, 0, 1)


def jpeg_compression(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """A PIL JPEG round trip at the given quality, on the image rounded to 8 bits (grey images as
    ``L``, colour as ``RGB`` with PIL's default 4:2:0 chroma subsampling, as the reference;
    deterministic)."""
    quality = JPEG_QUALITY[severity - 1]
    n, c = x.shape[:2]
    pixels = np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)
    out = np.empty_like(x)
    for i in range(n):
        image = Image.fromarray(pixels[i, 0] if c == 1 else pixels[i].transpose(1, 2, 0))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=quality)
        decoded = np.asarray(Image.open(buffer), dtype=np.float64) / 255.0
        out[i] = decoded[None] if c == 1 else decoded.transpose(2, 0, 1)
    return out
