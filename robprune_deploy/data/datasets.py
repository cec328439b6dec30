"""Dataset builders (Fashion-MNIST's is in :mod:`robprune_deploy.data.fashion_mnist`).

Every dataset yields ``(image in [0, 1] of shape C x H x W, int label)``.

Nothing is ever downloaded: torchvision datasets are opened with ``download=False`` from the root
the recipe names, and a missing or incomplete root is a :class:`DatasetError` naming it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, TensorDataset

from robprune_deploy.data.images import UnitTensor, load_image
from robprune_deploy.data.paths import check_tree, not_a_folder, refuse_special_files
from robprune_deploy.errors import DatasetError
from robprune_deploy.registry import Registry

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)
SVHN_MEAN, SVHN_STD = (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

CIFAR10_FILES = ("batches.meta", "test_batch", *(f"data_batch_{i}" for i in range(1, 6)))
"""What torchvision reads (and checksums) in ``cifar-10-batches-py``."""

DIGITS_SPLIT_SEED = 0
"""The digits train/test split is fixed (independent of the run seed) so results compare across runs."""


@dataclass(frozen=True)
class DatasetBundle:
    """A train and a test split with what a model needs to know about them.

    ``train_plain`` is the training split without augmentation (same images, same order): the
    validation split is carved from it. ``None`` when ``train`` has no augmentation.
    """

    name: str
    train: Dataset
    test: Dataset
    num_classes: int
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train_plain: Dataset | None = None

    @property
    def unaugmented_train(self) -> Dataset:
        """The training images as the test split sees its own: no random crops or flips."""
        return self.train_plain if self.train_plain is not None else self.train


DatasetBuilder = Callable[[Path | None, int | None, bool], DatasetBundle]
"""``builder(root, image_size, augment) -> DatasetBundle``."""

DATASETS: Registry[DatasetBuilder] = Registry("dataset")


@DATASETS.register("digits")
def digits(root: Path | None, image_size: int | None, augment: bool) -> DatasetBundle:
    """scikit-learn's bundled 8x8 handwritten digits (1797 images), scaled to [0, 1] and resized.

    The split is stratified, 75% train / 25% test, with a fixed seed.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    raw = load_digits()
    images = torch.tensor(raw.images / 16.0, dtype=torch.float32).unsqueeze(1)
    size = image_size or 16
    if size != 8:
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    labels = torch.tensor(raw.target, dtype=torch.long)
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=0.25, stratify=raw.target, random_state=DIGITS_SPLIT_SEED
    )
    train_x, test_x = images[train_idx], images[test_idx]
    mean, std = float(train_x.mean()), float(train_x.std())
    return DatasetBundle(
        "digits",
        TensorDataset(train_x, labels[train_idx]),
        TensorDataset(test_x, labels[test_idx]),
        num_classes=10,
        input_shape=(1, size, size),
        mean=(mean,),
        std=(std,),
    )


def _require_root(root: Path | None, dataset: str) -> Path:
    if root is None:
        raise DatasetError(f"data.root: dataset {dataset!r} is read from a local folder; set data.root")
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        reason = not_a_folder(root)
        hint = f" (dataset {dataset!r} is never downloaded)" if reason == "does not exist" else ""
        raise DatasetError(f"data.root: {root} {reason}{hint}")
    return root


def _reason(exc: BaseException) -> str:
    """torchvision's message without its "You can use download=True" hint: nothing is downloaded here."""
    sentences = [part.strip() for part in str(exc).split(". ") if part.strip()]
    kept = [part for part in sentences if "download=True" not in part]
    return ". ".join(kept).rstrip(".") or type(exc).__name__


def _plain_twin(dataset: Any, transform: Callable) -> Any:
    """A shallow copy of a torchvision dataset that shares its data but applies ``transform``."""
    twin = copy.copy(dataset)
    twin.transform = transform
    return twin


def _transforms(image_size: int | None, augment: bool, native: int) -> tuple[Callable, Callable]:
    from torchvision import transforms as T

    size = image_size or native
    resize = [T.Resize((size, size))] if size != native else []
    train = T.Compose(
        resize + ([T.RandomCrop(size, padding=size // 8), T.RandomHorizontalFlip()] if augment else []) + [UnitTensor()]
    )
    test = T.Compose([*resize, UnitTensor()])
    return train, test


@DATASETS.register("cifar10")
def cifar10(root: Path | None, image_size: int | None, augment: bool) -> DatasetBundle:
    """CIFAR-10 from ``root`` (the folder holding ``cifar-10-batches-py``)."""
    from torchvision.datasets import CIFAR10

    path = _require_root(root, "cifar10")
    refuse_special_files(path / "cifar-10-batches-py", CIFAR10_FILES, "data.root")
    train_tf, test_tf = _transforms(image_size, augment, 32)
    try:
        train = CIFAR10(str(path), train=True, transform=train_tf, download=False)
        test = CIFAR10(str(path), train=False, transform=test_tf, download=False)
    except (RuntimeError, OSError) as exc:
        reason = _reason(exc)
        raise DatasetError(f"data.root: {path} has no readable CIFAR-10 (cifar-10-batches-py): {reason}") from None
    size = image_size or 32
    plain = _plain_twin(train, test_tf)
    return DatasetBundle("cifar10", train, test, 10, (3, size, size), CIFAR10_MEAN, CIFAR10_STD, plain)


@DATASETS.register("svhn")
def svhn(root: Path | None, image_size: int | None, augment: bool) -> DatasetBundle:
    """SVHN from ``root`` (the folder holding ``train_32x32.mat`` and ``test_32x32.mat``); no flips."""
    from torchvision.datasets import SVHN

    path = _require_root(root, "svhn")
    refuse_special_files(path, ("train_32x32.mat", "test_32x32.mat"), "data.root")
    train_tf, test_tf = _transforms(image_size, False, 32)
    try:
        train = SVHN(str(path), split="train", transform=train_tf, download=False)
        test = SVHN(str(path), split="test", transform=test_tf, download=False)
    except (RuntimeError, OSError) as exc:
        files = "train_32x32.mat, test_32x32.mat"
        raise DatasetError(f"data.root: {path} has no readable SVHN ({files}): {_reason(exc)}") from None
    size = image_size or 32
    return DatasetBundle("svhn", train, test, 10, (3, size, size), SVHN_MEAN, SVHN_STD)


@DATASETS.register("imagefolder")
def imagefolder(root: Path | None, image_size: int | None, augment: bool) -> DatasetBundle:
    """``root/train/<class>/*.png`` and ``root/val/<class>/*`` (or ``root/test``), RGB, resized.

    Images are decoded when they are loaded, each with
    :func:`~robprune_deploy.data.images.load_image`, so a damaged file anywhere in the folder stops
    the run with one error naming it; 16-bit and float images keep their range. The folders are
    checked first (:func:`~robprune_deploy.data.paths.check_tree`): no symbolic link may loop or
    lead out of ``root`` or across splits, and no entry may be a FIFO, socket or device.
    """
    from torchvision.datasets import ImageFolder

    path = _require_root(root, "imagefolder")
    test_dir = next((path / d for d in ("val", "test") if (path / d).is_dir()), None)
    if not (path / "train").is_dir() or test_dir is None:
        raise DatasetError(f"data.root: {path} needs a train/ folder and a val/ or test/ folder of class folders")
    for split in (path / "train", test_dir):
        check_tree(split, path)
    size = image_size or 64
    train_tf, test_tf = _transforms(size, augment, -1)
    try:
        train = ImageFolder(str(path / "train"), transform=train_tf, loader=load_image)
        test = ImageFolder(str(test_dir), transform=test_tf, loader=load_image)
    except (RuntimeError, OSError, FileNotFoundError) as exc:
        raise DatasetError(f"data.root: {path}: {_reason(exc)}") from None
    if train.classes != test.classes:
        raise DatasetError(f"data.root: {path}: train/ and {test_dir.name}/ have different class folders")
    plain = _plain_twin(train, test_tf)
    return DatasetBundle(
        "imagefolder", train, test, len(train.classes), (3, size, size), IMAGENET_MEAN, IMAGENET_STD, plain
    )


def build_dataset(
    name: str, root: Path | None = None, image_size: int | None = None, augment: bool = True
) -> DatasetBundle:
    """Build the dataset ``name`` and check that its first images fit the declared shape and range.

    :raises DatasetError: naming the root when images have the wrong size or channels, or values
        that are NaN/inf or outside [0, 1].
    """
    bundle = DATASETS.get(name)(root, image_size, augment)
    for split_name, split in (("train", bundle.train), ("test", bundle.test)):
        if len(split) == 0:  # type: ignore[arg-type]
            raise DatasetError(f"data.root: the {split_name} split of {name!r} is empty")
        check_images(split, bundle.input_shape, f"{name} {split_name} split")
    return bundle


def check_images(split: Dataset, shape: tuple[int, int, int], where: str, count: int = 8) -> None:
    """Validate the first ``count`` images of ``split`` (all of them for in-memory tensor data)."""
    if isinstance(split, TensorDataset):
        images = split.tensors[0]
    else:
        images = torch.stack([split[i][0] for i in range(min(count, len(split)))])  # type: ignore[arg-type]
    if tuple(images.shape[1:]) != tuple(shape):
        raise DatasetError(f"{where}: images are {tuple(images.shape[1:])}, expected {tuple(shape)} (C, H, W)")
    if not bool(torch.isfinite(images).all()):
        raise DatasetError(f"{where}: images contain NaN or inf")
    if float(images.min()) < 0 or float(images.max()) > 1:
        raise DatasetError(f"{where}: pixel values must lie in [0, 1]")
