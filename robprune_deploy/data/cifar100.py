"""CIFAR-100 from the ``cifar-100-python`` folder (``train``, ``test``, ``meta``), fine labels.

The files are Python pickles. They are read with an unpickler that admits only what the real
files hold (dicts, lists, strings, numpy arrays), so a tampered file cannot run code, and without
torchvision's checksum test, which would also refuse any smaller file in the same format.
"""

from __future__ import annotations

import io
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from robprune_deploy.data.datasets import DATASETS, DatasetBundle, _require_root, _transforms
from robprune_deploy.data.paths import not_a_folder, require_file
from robprune_deploy.errors import DatasetError

CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
CIFAR100_CLASSES = 100
FOLDER = "cifar-100-python"

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refused global {module}.{name}")
        return super().find_class(module, name)


def read_pickle(path: Path) -> dict[str, Any]:
    """A CIFAR pickle as a dict with ``str`` keys (the files were written by Python 2)."""
    try:
        document = _ArraysOnly(io.BytesIO(path.read_bytes()), encoding="latin1").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError) as exc:
        raise DatasetError(f"data.root: {path} is not a readable CIFAR pickle ({exc})") from None
    if not isinstance(document, dict):
        raise DatasetError(f"data.root: {path} is not a readable CIFAR pickle (no dict inside)")
    return {k.decode() if isinstance(k, bytes) else str(k): v for k, v in document.items()}


class ArrayImages(Dataset):
    """Images held as a uint8 array ``N x H x W x C``, transformed on access like torchvision's."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Callable) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        return self.transform(Image.fromarray(self.images[index])), int(self.labels[index])


def read_split(path: Path, transform: Callable) -> ArrayImages:
    """One CIFAR-100 split file: ``data`` (N x 3072 uint8, channel-major) and ``fine_labels``."""
    require_file(path, "data.root", "is missing (the CIFAR-100 python version has train, test and meta)")
    document = read_pickle(path)
    missing = [key for key in ("data", "fine_labels") if key not in document]
    if missing:
        raise DatasetError(f"data.root: {path} has no {', '.join(missing)} entry")
    data, labels = np.asarray(document["data"]), np.asarray(document["fine_labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DatasetError(f"data.root: {path}: data must be uint8 of shape (N, 3072), got {data.dtype} {data.shape}")
    if labels.shape != (len(data),):
        raise DatasetError(f"data.root: {path}: {len(labels)} fine_labels for {len(data)} images")
    if len(labels) and (labels.min() < 0 or labels.max() >= CIFAR100_CLASSES):
        raise DatasetError(f"data.root: {path}: fine_labels must lie in [0, {CIFAR100_CLASSES})")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return ArrayImages(np.ascontiguousarray(images), labels.astype(np.int64), transform)


@DATASETS.register("cifar100")
def cifar100(root: Path | None, image_size: int | None, augment: bool) -> DatasetBundle:
    """CIFAR-100 from ``root`` (the folder holding ``cifar-100-python``), 100 fine classes."""
    path = _require_root(root, "cifar100")
    folder = path / FOLDER
    if not folder.is_dir():
        if os.path.lexists(folder):
            raise DatasetError(f"data.root: {folder} {not_a_folder(folder)}")
        raise DatasetError(f"data.root: {path} has no {FOLDER}/ folder (the Python version of CIFAR-100)")
    train_tf, test_tf = _transforms(image_size, augment, 32)
    train, test = read_split(folder / "train", train_tf), read_split(folder / "test", test_tf)
    size = image_size or 32
    return DatasetBundle("cifar100", train, test, CIFAR100_CLASSES, (3, size, size), CIFAR100_MEAN, CIFAR100_STD)
