"""Deterministic data loaders (seeded shuffling, optional distributed sharding) and the validation split."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, Subset
from torch.utils.data.distributed import DistributedSampler

from robprune_deploy.errors import DatasetError

VALIDATION_SEED = 2_020
"""Seed of the validation split. Fixed and independent of the run seed, so every run, seed and
method holds out the same images."""


def validation_split(size: int, val_size: int, seed: int = VALIDATION_SEED) -> tuple[list[int], list[int]]:
    """``(train indices, validation indices)`` of a training split of ``size`` items, both sorted.

    ``val_size`` items drawn at random with ``seed`` are held out; the rest stay for training.

    :raises DatasetError: naming ``data.val_size`` when it leaves no training item.
    """
    if val_size <= 0:
        return list(range(size)), []
    if val_size >= size:
        raise DatasetError(f"data.val_size: {val_size} leaves nothing to train on (the training split has {size})")
    order = torch.randperm(size, generator=torch.Generator().manual_seed(seed))
    return order[val_size:].sort().values.tolist(), order[:val_size].sort().values.tolist()


def seeded_subset(dataset: Dataset, size: int | None, seed: int) -> Dataset:
    """A fixed random subset of ``size`` items (the whole dataset when ``size`` is None or too big)."""
    n = len(dataset)  # type: ignore[arg-type]
    if size is None or size >= n:
        return dataset
    generator = torch.Generator().manual_seed(seed)
    indices = torch.randperm(n, generator=generator)[:size].sort().values.tolist()
    return Subset(dataset, indices)


def first_examples(
    batches: list[tuple[torch.Tensor, torch.Tensor]], n: int | None
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first ``n`` examples of ``batches``, in the same batches (all of them when ``n`` is None)."""
    if n is None:
        return batches
    kept, left = [], n
    for x, y in batches:
        if left <= 0:
            break
        kept.append((x[:left], y[:left]))
        left -= len(y)
    return kept


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int = 0,
    epoch: int = 0,
    num_workers: int = 0,
    distributed: bool = False,
    pin_memory: bool = False,
    drop_last: bool = False,
) -> DataLoader:
    """A loader whose order depends only on ``(seed, epoch)``, so a resumed run sees the same batches.

    With ``distributed`` the dataset is sharded by :class:`DistributedSampler` (same seed and epoch on
    every rank, as DDP requires).
    """
    if distributed:
        sampler: DistributedSampler = DistributedSampler(dataset, shuffle=shuffle, seed=seed, drop_last=drop_last)
        sampler.set_epoch(epoch)
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=num_workers,
            pin_memory=pin_memory,
            drop_last=drop_last,
        )
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator if shuffle else None,
        num_workers=num_workers,
        pin_memory=pin_memory,
        drop_last=drop_last,
    )
