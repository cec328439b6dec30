"""Mask stability across runs: the final mask of a search, kept comparably, and the distance of two.

S2AP's paper reports stability as the Hamming distance between the masks that different runs
(seeds, data orders) end with. A mask here is ``{name: bool tensor}`` in score space: one entry per
weight (unstructured, keyed by parameter) or per channel of a coupled group (channel, keyed by
group). Two runs are comparable when they masked the same model at the same granularity.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robprune_deploy import Granularity, PruningResult
from robprune_deploy.atomic import atomic_path
from robprune_deploy.errors import CheckpointError

MASK_FILE_SUFFIX = "_final_mask.npz"


def final_masks(result: PruningResult) -> dict[str, torch.Tensor]:
    """The search's final mask: the channel keep-sets (channel) or the weight masks (unstructured), on CPU."""
    if result.granularity is Granularity.CHANNEL:
        assert result.channel_keep is not None
        return {name: keep.detach().bool().cpu() for name, keep in result.channel_keep.items()}
    return {name: mask.detach().bool().cpu() for name, mask in result.masks().items()}


def _check_comparable(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    if a.keys() != b.keys():
        raise ValueError(f"the masks cover different tensors: {sorted(a.keys() ^ b.keys())[:3]}")
    for name in a:
        if a[name].shape != b[name].shape:
            raise ValueError(f"{name}: mask shapes differ ({tuple(a[name].shape)} vs {tuple(b[name].shape)})")


def mask_hamming(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> int:
    """Entries masked in one and kept in the other."""
    _check_comparable(a, b)
    return int(sum(int((a[k].bool() != b[k].bool()).sum()) for k in a))


def mask_distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Hamming distance normalized by the kept entries (their mean over the two masks).

    Two masks with the same number of kept entries that share all but ``n`` of them are at
    ``2 n / kept``: 0 for identical masks, 2 for disjoint ones; half the distance is the fraction
    of kept entries swapped, the unit of ``swap_fraction``.
    """
    kept = 0.5 * sum(int(a[k].sum()) + int(b[k].sum()) for k in a)
    return mask_hamming(a, b) / kept if kept else 0.0


def mask_sha256(masks: dict[str, torch.Tensor]) -> str:
    """A digest of the mask (names, shapes and bits): two runs with equal digests ended with the same mask."""
    digest = hashlib.sha256()
    for name in sorted(masks):
        bits = masks[name].detach().bool().cpu().numpy()
        digest.update(f"{name}:{bits.shape};".encode())
        digest.update(np.packbits(bits.ravel()).tobytes())
    return digest.hexdigest()


def save_masks(masks: dict[str, torch.Tensor], path: Path) -> Path:
    """Write ``masks`` bit-packed into an ``.npz`` (atomically): 1/8 byte per entry, loadable without torch."""
    arrays: dict[str, Any] = {}
    for index, name in enumerate(sorted(masks)):
        bits = masks[name].detach().bool().cpu().numpy()
        arrays[f"bits_{index}"] = np.packbits(bits.ravel())
        arrays[f"shape_{index}"] = np.asarray(bits.shape, dtype=np.int64)
    arrays["names"] = np.asarray(sorted(masks), dtype=np.str_)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, **arrays)
    return path


def load_masks(path: Path) -> dict[str, torch.Tensor]:
    """Read a file of :func:`save_masks`.

    :raises CheckpointError: for a file that is missing or not such a mask file.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            masks = {}
            for index, name in enumerate(data["names"].tolist()):
                shape = tuple(int(n) for n in data[f"shape_{index}"])
                count = int(np.prod(shape)) if shape else 1
                bits = np.unpackbits(data[f"bits_{index}"])[:count].astype(bool).reshape(shape)
                masks[str(name)] = torch.from_numpy(bits)
            return masks
    except (OSError, KeyError, ValueError) as exc:
        raise CheckpointError(f"mask file {path}: not readable as a saved mask ({exc})") from None
