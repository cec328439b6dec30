"""Image files decoded to RGB with their pixel values scaled to [0, 1] by the range they were stored in.

PIL's ``convert("RGB")`` treats every image as 8-bit: a 16-bit value above 255 becomes 255, so a
16-bit PNG or TIFF would reach the model almost all white. High-bit-depth images (PIL modes
``I;16*``, ``I`` and ``F``) are therefore decoded here instead, to a float ``3 x H x W`` tensor:

- ``I;16``: unsigned 16-bit, divided by 65535;
- ``I`` (32-bit integers holding what the file stored): divided by ``2**bits - 1`` for the bit
  depth the file declares (a PNG's is 16; a TIFF's ``BitsPerSample``, signed samples shifted by
  ``2**(bits - 1)`` first); other formats: 16 bits when every value fits, else 32;
- ``F`` (32-bit floats): taken as they are, and refused unless finite and within [0, 1], the
  range float images are stored in by convention.

Every other mode keeps PIL's own conversion to 8-bit RGB, so ordinary images are read exactly as
torchvision reads them. :class:`UnitTensor` ends the transforms: it turns a PIL image into a tensor
and passes an already decoded tensor through.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from robprune_deploy.data.paths import not_a_file
from robprune_deploy.errors import DatasetError

TIFF_BITS_PER_SAMPLE, TIFF_SAMPLE_FORMAT, TIFF_SIGNED = 258, 339, 2
PNG_MAX_BITS = 16


def _integer_range(image: Any, values: np.ndarray) -> tuple[float, float]:
    """``(offset, scale)`` so that ``(values + offset) / scale`` spans [0, 1] over the stored bit depth."""
    if image.mode.startswith("I;16"):
        return 0.0, 65535.0
    bits, signed = None, False
    if image.format == "PNG":
        bits = PNG_MAX_BITS
    elif image.format == "TIFF":
        tags = getattr(image, "tag_v2", {})
        declared = tags.get(TIFF_BITS_PER_SAMPLE)
        declared = declared[0] if isinstance(declared, tuple) else declared
        bits = int(declared) if declared else None
        form = tags.get(TIFF_SAMPLE_FORMAT)
        signed = (form[0] if isinstance(form, tuple) else form) == TIFF_SIGNED
    if bits is None:
        low, high = (int(values.min()), int(values.max())) if values.size else (0, 0)
        signed = low < 0
        bits = 16 if low >= 0 and high <= 65535 else 32
    offset = float(2 ** (bits - 1)) if signed else 0.0
    return offset, float(2**bits - 1)


def high_depth_tensor(image: Any, path: str) -> torch.Tensor | None:
    """``image`` as a float ``3 x H x W`` tensor in [0, 1] when its mode holds more than 8 bits, else ``None``.

    :raises DatasetError: naming ``path`` when a float image is not finite or not within [0, 1].
    """
    mode = image.mode
    if not (mode.startswith("I;16") or mode in ("I", "F")):
        return None
    values = np.asarray(image)
    if mode == "F":
        unit = values.astype(np.float32)
        if not np.isfinite(unit).all() or (unit.size and (unit.min() < 0 or unit.max() > 1)):
            raise DatasetError(
                f"data.root: image {path}: floating-point pixels must be finite and within [0, 1] "
                f"(found {np.nanmin(unit):.4g} to {np.nanmax(unit):.4g})"
            )
    else:
        offset, scale = _integer_range(image, values)
        unit = ((values.astype(np.float64) + offset) / scale).clip(0.0, 1.0).astype(np.float32)
    gray = torch.from_numpy(np.ascontiguousarray(unit))
    return gray.unsqueeze(0).expand(3, -1, -1).contiguous()


def load_image(path: str) -> object:
    """An RGB image, decoded now: a PIL image, or a float tensor in [0, 1] for a high-bit-depth one.

    Every image is checked as it is loaded, not only the first few.

    :raises DatasetError: naming the file when it is not a regular file (a FIFO would block the
        read forever), is truncated, not an image, too large to decode, or a float image outside [0, 1].
    """
    from PIL import Image

    reason = not_a_file(Path(path))
    if reason is not None:
        raise DatasetError(f"data.root: image {path} {reason}")
    try:
        with open(path, "rb") as handle:
            image = Image.open(handle)
            image.load()  # decodes every pixel: a truncated file fails here
            decoded = high_depth_tensor(image, path)
            return decoded if decoded is not None else image.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        detail = (str(exc).splitlines() or [type(exc).__name__])[0][:120]
        raise DatasetError(f"data.root: image {path}: cannot be decoded ({detail})") from None


class UnitTensor:
    """The last transform: a PIL image becomes a ``C x H x W`` float tensor in [0, 1] (as
    ``ToTensor`` does); a tensor (a high-bit-depth image, decoded already) passes through."""

    def __call__(self, picture: Any) -> torch.Tensor:
        if isinstance(picture, torch.Tensor):
            return picture
        from torchvision.transforms import functional

        return functional.to_tensor(picture)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
