"""The labels of a dataset, read without decoding its images where the dataset keeps them apart."""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from robprune_deploy.errors import DatasetError


def labels_of(dataset: Dataset) -> list[int]:
    """Every label of ``dataset`` in order (``Subset`` of tensor, CIFAR, SVHN or ImageFolder data)."""
    if isinstance(dataset, Subset):
        inner = labels_of(dataset.dataset)
        return [inner[i] for i in dataset.indices]
    if isinstance(dataset, TensorDataset):
        return [int(v) for v in dataset.tensors[1].tolist()]
    for attribute in ("targets", "labels"):  # ImageFolder and CIFAR10: targets; SVHN: labels
        values: Any = getattr(dataset, attribute, None)
        if values is not None:
            return [int(v) for v in (values.tolist() if hasattr(values, "tolist") else values)]
    return [int(dataset[i][1]) for i in range(len(dataset))]  # type: ignore[arg-type]


def check_labels(labels: list[int] | torch.Tensor, num_classes: int, where: str) -> Counter[int]:
    """Labels must lie in ``[0, num_classes)`` and name at least two classes.

    :returns: the number of examples of each class.
    :raises DatasetError: naming ``where``.
    """
    values = labels.tolist() if isinstance(labels, torch.Tensor) else list(labels)
    if not values:
        raise DatasetError(f"{where}: has no examples")
    wrong = [v for v in values if not 0 <= int(v) < num_classes]
    if wrong:
        raise DatasetError(f"{where}: label {wrong[0]} is outside [0, {num_classes}) ({len(wrong)} such labels)")
    counts = Counter(int(v) for v in values)
    if len(counts) < 2:
        raise DatasetError(
            f"{where}: its {len(values)} examples are all of class {next(iter(counts))}; accuracy needs examples "
            f"of at least 2 classes (raise evaluate.num_examples or data.test_subset)"
        )
    return counts
