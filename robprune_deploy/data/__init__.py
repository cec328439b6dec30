"""Datasets (digits embedded; CIFAR-10/100, SVHN, Tiny-ImageNet and ImageFolder from a local root) and loaders."""

from robprune_deploy.data import cifar100, tiny_imagenet  # noqa: F401  (register their datasets)
from robprune_deploy.data.datasets import DATASETS, DatasetBundle, build_dataset
from robprune_deploy.data.loaders import make_loader, seeded_subset

__all__ = ["DATASETS", "DatasetBundle", "build_dataset", "make_loader", "seeded_subset"]
