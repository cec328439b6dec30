"""Tiny-ImageNet in its official ``tiny-imagenet-200`` layout (64x64 JPEGs, read lazily).

``wnids.txt`` lists the classes; ``train/<wnid>/images/*.JPEG`` are the training images;
``val/images/*.JPEG`` with ``val/val_annotations.txt`` (``file<TAB>wnid<TAB>box...``) is the
labelled split used for testing (the official ``test/`` has no labels).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import Dataset

from robprune_deploy.data.datasets import DATASETS, DatasetBundle, _require_root, _transforms
from robprune_deploy.data.images import load_image
from robprune_deploy.data.paths import not_a_file, refuse_special_files, require_file
from robprune_deploy.errors import DatasetError

TINY_IMAGENET_MEAN, TINY_IMAGENET_STD = (0.4802, 0.4481, 0.3975), (0.2770, 0.2691, 0.2821)
FOLDER = "tiny-imagenet-200"
NATIVE_SIZE = 64


class ImageFiles(Dataset):
    """``(path, label)`` pairs opened on access by :func:`~robprune_deploy.data.images.load_image`, as
    RGB (a few Tiny-ImageNet JPEGs are gray)."""

    def __init__(self, samples: list[tuple[Path, int]], transform: Callable) -> None:
        self.samples, self.transform = samples, transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        return self.transform(load_image(str(path))), label


def _dataset_folder(path: Path) -> Path:
    """``root/tiny-imagenet-200``, or ``root`` itself when it is that folder."""
    for candidate in (path / FOLDER, path):
        if (candidate / "wnids.txt").is_file():
            return candidate
        refuse_special_files(candidate, ("wnids.txt",), "data.root")
    raise DatasetError(f"data.root: {path} has no {FOLDER}/wnids.txt (the official Tiny-ImageNet layout)")


def read_wnids(folder: Path) -> list[str]:
    wnids = [line.strip() for line in (folder / "wnids.txt").read_text().splitlines() if line.strip()]
    if not wnids or len(set(wnids)) != len(wnids):
        raise DatasetError(f"data.root: {folder / 'wnids.txt'} must list distinct class ids, one per line")
    return wnids


def train_samples(folder: Path, wnids: list[str]) -> list[tuple[Path, int]]:
    samples = []
    for label, wnid in enumerate(wnids):
        images = folder / "train" / wnid / "images"
        files = sorted(images.glob("*.JPEG")) if images.is_dir() else []
        for file in files:
            require_file(file, "data.root")
        if not files:
            raise DatasetError(f"data.root: {images} holds no .JPEG images (class {wnid} of wnids.txt)")
        samples += [(file, label) for file in files]
    return samples


def val_samples(folder: Path, wnids: list[str]) -> list[tuple[Path, int]]:
    annotations = require_file(folder / "val" / "val_annotations.txt", "data.root", "is missing (labels of val/images)")
    index = {wnid: label for label, wnid in enumerate(wnids)}
    samples = []
    for number, line in enumerate(annotations.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in index:
            raise DatasetError(
                f"data.root: {annotations} line {number}: expected 'file<TAB>wnid' with a wnid of wnids.txt"
            )
        file = folder / "val" / "images" / fields[0]
        reason = not_a_file(file)
        if reason is not None:
            raise DatasetError(f"data.root: {annotations} line {number}: {file} {reason}")
        samples.append((file, index[fields[1]]))
    if not samples:
        raise DatasetError(f"data.root: {annotations} lists no image")
    return samples


@DATASETS.register("tiny_imagenet")
def tiny_imagenet(root: Path | None, image_size: int | None, augment: bool) -> DatasetBundle:
    """Tiny-ImageNet from ``root`` (the folder holding ``tiny-imagenet-200``); the val split is the test split."""
    folder = _dataset_folder(_require_root(root, "tiny_imagenet"))
    wnids = read_wnids(folder)
    train_tf, test_tf = _transforms(image_size, augment, NATIVE_SIZE)
    train = ImageFiles(train_samples(folder, wnids), train_tf)
    test = ImageFiles(val_samples(folder, wnids), test_tf)
    size = image_size or NATIVE_SIZE
    return DatasetBundle(
        "tiny_imagenet", train, test, len(wnids), (3, size, size), TINY_IMAGENET_MEAN, TINY_IMAGENET_STD
    )
