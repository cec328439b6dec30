"""Fashion-MNIST (Xiao, Rasul and Vollgraf, 2017) from its four original IDX files.

60,000 training and 10,000 test images, 28x28 grayscale, 10 classes. The files are read from
``data.root`` or, when no root is given, from where Debian's ``dataset-fashion-mnist`` package
installs them (:data:`DEBIAN_ROOT`). Nothing is downloaded.

Images stay in memory as ``uint8`` (47 MB for the training split) and become ``float32`` in [0, 1]
one batch at a time. Training augmentation (``data.augment``): a random 28x28 crop of the image
zero-padded by 2 pixels, and a horizontal flip with probability 1/2, the usual Fashion-MNIST choice.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from robprune_deploy.data.datasets import DATASETS, DatasetBundle
from robprune_deploy.data.idx import IMAGES_MAGIC, LABELS_MAGIC, read_idx
from robprune_deploy.data.paths import not_a_file, not_a_folder
from robprune_deploy.errors import DatasetError

DEBIAN_ROOT = Path("/usr/share/datasets/fashion-mnist")
"""Where ``apt-get install dataset-fashion-mnist`` puts the files (``dpkg -L dataset-fashion-mnist``)."""

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
NATIVE_SIZE = 28
CROP_PADDING = 2
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


class UInt8ImageDataset(Dataset):
    """``(image, label)`` pairs from ``uint8`` images of shape N x C x H x W, as ``float32`` in [0, 1].

    Batched access (``__getitems__``, which :class:`~torch.utils.data.DataLoader` uses) converts
    and augments a whole batch with a few tensor operations.

    :param augment: random crop after zero-padding by :data:`CROP_PADDING`, and horizontal flip,
        drawn from torch's global generator (the trainer seeds it per epoch).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, augment: bool = False) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError("images must be a uint8 tensor of shape N x C x H x W")
        self.images, self.labels, self.augment = images, labels, augment

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x, y = self.__getitems__([index])[0]
        return x, y

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, int]]:
        index = torch.as_tensor(indices, dtype=torch.long)
        x = self.images[index].float().div_(255.0)
        if self.augment:
            x = _crop_and_flip(x, CROP_PADDING)
        return list(zip(x.unbind(0), self.labels[index].tolist(), strict=True))


def _crop_and_flip(x: torch.Tensor, padding: int) -> torch.Tensor:
    """Per image: a random crop of the zero-padded image at the original size, then a random flip."""
    n, _, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    top = torch.randint(0, 2 * padding + 1, (n, 1, 1))
    left = torch.randint(0, 2 * padding + 1, (n, 1, 1))
    rows = top + torch.arange(h).view(1, h, 1)
    cols = left + torch.arange(w).view(1, 1, w)
    batch = torch.arange(n).view(n, 1, 1)
    cropped = padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)
    flip = torch.rand(n) < 0.5
    cropped[flip] = cropped[flip].flip(-1)
    return cropped.contiguous()


def _find(root: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (root / name).is_file():
            return root / name
        if os.path.lexists(root / name):  # there, but a FIFO, a folder, a broken link...
            reason = not_a_file(root / name, "is a symbolic link to nothing")
            raise DatasetError(f"{root / name} {reason}")
    raise DatasetError(f"{root / (stem + '.gz')}: no such file (nor {stem} uncompressed)")


def read_split(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 N x 28 x 28, labels uint8 N)`` of ``split`` (``train`` or ``test``) under ``root``.

    :raises DatasetError: naming the file that is missing or malformed, or both files when their
        counts differ; labels outside 0-9 or images that are not 28x28 are errors too.
    """
    image_stem, label_stem = FILES[split]
    image_file, label_file = _find(root, image_stem), _find(root, label_stem)
    images = read_idx(image_file, IMAGES_MAGIC)
    labels = read_idx(label_file, LABELS_MAGIC)
    if len(images) != len(labels):
        raise DatasetError(f"{image_file}: {len(images)} images, but {label_file} has {len(labels)} labels")
    if images.shape[1:] != (NATIVE_SIZE, NATIVE_SIZE):
        raise DatasetError(f"{image_file}: images are {images.shape[1]}x{images.shape[2]}, expected 28x28")
    if len(labels) and int(labels.max()) >= len(CLASSES):
        raise DatasetError(f"{label_file}: label {int(labels.max())} is not a class (0-9)")
    return images, labels


def _resized(images: np.ndarray, size: int) -> torch.Tensor:
    tensor = torch.from_numpy(images).unsqueeze(1)
    if size == NATIVE_SIZE:
        return tensor
    scaled = F.interpolate(tensor.float(), size=(size, size), mode="bilinear", align_corners=False)
    return scaled.round().clamp(0, 255).to(torch.uint8)


def _pixel_statistics(images: torch.Tensor) -> tuple[float, float]:
    """Mean and standard deviation of the pixels in [0, 1], from a histogram (no float copy)."""
    counts = torch.bincount(images.flatten(), minlength=256).double()
    values = torch.arange(256, dtype=torch.float64) / 255.0
    mean = float((counts * values).sum() / counts.sum())
    var = float((counts * (values - mean) ** 2).sum() / counts.sum())
    return mean, var**0.5


@DATASETS.register("fashion_mnist")
def fashion_mnist(root: Path | None, image_size: int | None, augment: bool) -> DatasetBundle:
    """Fashion-MNIST from ``root`` (default :data:`DEBIAN_ROOT`): the four IDX files, ``.gz`` or not.

    ``image_size`` other than 28 resizes every image once at load time (bilinear, kept as uint8).
    """
    if root is None:
        path = DEBIAN_ROOT
        if not path.is_dir():
            raise DatasetError(
                f"data.root: not set, and {path} does not exist (apt-get install dataset-fashion-mnist, "
                "or point data.root at a folder holding the four IDX files)"
            )
    else:
        path = Path(root).expanduser().resolve()
        if not path.is_dir():
            reason = not_a_folder(path)
            hint = " (dataset 'fashion_mnist' is never downloaded)" if reason == "does not exist" else ""
            raise DatasetError(f"data.root: {path} {reason}{hint}")
    size = image_size or NATIVE_SIZE
    splits = {}
    for split in ("train", "test"):
        images, labels = read_split(path, split)
        splits[split] = (_resized(images, size), torch.from_numpy(labels.astype(np.int64)))
    train_x, train_y = splits["train"]
    test_x, test_y = splits["test"]
    mean, std = _pixel_statistics(train_x)
    return DatasetBundle(
        "fashion_mnist",
        UInt8ImageDataset(train_x, train_y, augment),
        UInt8ImageDataset(test_x, test_y),
        num_classes=len(CLASSES),
        input_shape=(1, size, size),
        mean=(mean,),
        std=(std,),
        train_plain=UInt8ImageDataset(train_x, train_y) if augment else None,
    )
