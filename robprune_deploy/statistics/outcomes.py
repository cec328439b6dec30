"""Per-example outcomes (correct or not) stored compactly in JSON: bits packed, then base64.

10,000 outcomes take 1,668 characters instead of about 20,000 as a JSON list, so a benchmark's
results file can hold every cell's outcomes and be committed whole; paired tests then run on the
committed file alone.
"""

from __future__ import annotations

import base64
import binascii

import numpy as np

from robprune_deploy.arguments import check_count
from robprune_deploy.errors import ArgumentError


def pack_outcomes(outcomes: np.ndarray) -> str:
    """The boolean array ``outcomes`` as base64 text (its length is stored separately)."""
    array = np.asarray(outcomes)
    if array.ndim != 1 or array.dtype != np.bool_:
        raise ArgumentError(f"outcomes: must be a 1-d boolean array, got {array.dtype} of shape {array.shape}")
    return base64.b64encode(np.packbits(array).tobytes()).decode("ascii")


def unpack_outcomes(text: str, n: int) -> np.ndarray:
    """The ``n`` booleans packed in ``text`` by :func:`pack_outcomes`."""
    n = check_count(n, "n")
    try:
        packed = np.frombuffer(base64.b64decode(text.encode("ascii"), validate=True), dtype=np.uint8)
    except (binascii.Error, UnicodeEncodeError, AttributeError) as error:
        raise ArgumentError(f"outcomes: not base64-packed outcomes ({error})") from None
    if len(packed) != (n + 7) // 8:
        raise ArgumentError(f"outcomes: {len(packed)} packed bytes cannot hold exactly {n} outcomes")
    return np.unpackbits(packed, count=n).astype(bool)
