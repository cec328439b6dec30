"""The corruption registry and :func:`corrupt`: input checks, per-(type, severity) random streams,
and the conversion between torch tensors and the numpy arrays the corruptions work on (see the
package's notes for each type)."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence

import numpy as np
import torch

from robprune_deploy.errors import ArgumentError
from robprune_deploy.evaluation.corruptions.blur import defocus_blur, glass_blur, motion_blur, zoom_blur
from robprune_deploy.evaluation.corruptions.digital import (
    brightness,
    contrast,
    elastic_transform,
    jpeg_compression,
    pixelate,
)
from robprune_deploy.evaluation.corruptions.noise import gaussian_noise, impulse_noise, shot_noise
from robprune_deploy.evaluation.corruptions.weather import fog, frost, snow

Corruption = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]

CORRUPTIONS: dict[str, Corruption] = {
    "gaussian_noise": gaussian_noise,
    "shot_noise": shot_noise,
    "impulse_noise": impulse_noise,
    "defocus_blur": defocus_blur,
    "glass_blur": glass_blur,
    "motion_blur": motion_blur,
    "zoom_blur": zoom_blur,
    "snow": snow,
    "frost": frost,
    "fog": fog,
    "brightness": brightness,
    "contrast": contrast,
    "elastic_transform": elastic_transform,
    "pixelate": pixelate,
    "jpeg_compression": jpeg_compression,
}
"""The 15 types in the benchmark's order (noise, blur, weather, digital)."""
DETERMINISTIC = frozenset({"defocus_blur", "zoom_blur", "brightness", "contrast", "pixelate", "jpeg_compression"})
"""Types that draw no random numbers: the seed does not change them."""
SUBSTITUTED = frozenset({"frost"})
"""Types computed by a documented substitute, not the reference's procedure."""
SEVERITIES = (1, 2, 3, 4, 5)
MIN_SIDE = 8
"""Smallest image side accepted."""


def check_types(types: object, field: str = "types") -> tuple[str, ...]:
    """``types`` as a tuple of known corruption names, without repeats."""
    if isinstance(types, str) or not isinstance(types, Sequence) or not types:
        raise ArgumentError(f"{field}: must be a non-empty list of corruption names ({', '.join(CORRUPTIONS)})")
    for i, name in enumerate(types):
        if name not in CORRUPTIONS:
            raise ArgumentError(f"{field}[{i}]: unknown corruption {name!r}; known: {', '.join(CORRUPTIONS)}")
        if name in types[:i]:
            raise ArgumentError(f"{field}[{i}]: {name!r} is listed twice")
    return tuple(types)


def check_severity(severity: object, field: str = "severity") -> int:
    if isinstance(severity, bool) or not isinstance(severity, numbers.Integral) or int(severity) not in SEVERITIES:
        raise ArgumentError(f"{field}: must be an integer from 1 to 5, got {severity!r}")
    return int(severity)


def check_images(x: object, field: str = "x") -> torch.Tensor:
    """``x`` if it is a floating ``N x C x H x W`` tensor in [0, 1] with 1 or 3 channels and
    sides of at least :data:`MIN_SIDE`."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ArgumentError(f"{field}: must be a floating-point torch tensor, got {type(x).__name__}")
    if x.dim() != 4 or x.shape[1] not in (1, 3) or min(x.shape[2:]) < MIN_SIDE:
        raise ArgumentError(
            f"{field}: must be N x C x H x W with C 1 or 3 and H, W >= {MIN_SIDE}, got shape {tuple(x.shape)}"
        )
    if x.numel() and not (bool(torch.isfinite(x).all()) and float(x.min()) >= 0 and float(x.max()) <= 1):
        raise ArgumentError(f"{field}: values must be finite and in [0, 1]")
    return x


def corruption_rng(seed: int, name: str, severity: int) -> np.random.Generator:
    """The generator of one (type, severity) for ``seed``: independent of the other types drawn."""
    index = list(CORRUPTIONS).index(name)
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index, severity)))


def corrupt(x: torch.Tensor, name: str, severity: int, seed: int = 0) -> torch.Tensor:
    """``x`` (``N x C x H x W`` in [0, 1]) corrupted by ``name`` at ``severity``: same shape, dtype
    and device, values in [0, 1]."""
    check_images(x)
    (name,) = check_types([name], "name")
    severity = check_severity(severity)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ArgumentError(f"seed: must be an integer >= 0, got {seed!r}")
    if len(x) == 0:
        return x.clone()
    images = x.detach().to("cpu", torch.float64).numpy()
    out = CORRUPTIONS[name](images, severity, corruption_rng(int(seed), name, severity))
    return torch.from_numpy(np.clip(out, 0.0, 1.0)).to(device=x.device, dtype=x.dtype)
