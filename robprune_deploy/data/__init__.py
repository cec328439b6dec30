"""Datasets (digits embedded; Fashion-MNIST, CIFAR-10/100, SVHN, Tiny-ImageNet and ImageFolder from a
local root), the fixed validation split, and loaders."""

from robprune_deploy.data import cifar100, tiny_imagenet  # noqa: F401  (register their datasets)
from robprune_deploy.data import fashion_mnist as _fashion_mnist  # noqa: F401  (registers "fashion_mnist")
from robprune_deploy.data.datasets import DATASETS, DatasetBundle, build_dataset
from robprune_deploy.data.loaders import VALIDATION_SEED, first_examples, make_loader, seeded_subset, validation_split

__all__ = [
    "DATASETS",
    "VALIDATION_SEED",
    "DatasetBundle",
    "build_dataset",
    "first_examples",
    "make_loader",
    "seeded_subset",
    "validation_split",
]
