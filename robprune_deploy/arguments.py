"""Arguments of the Python API, checked where they enter it.

A wrong type, empty data, labels outside the model's classes, a batch that is not a batch of
images, or a NaN is a :class:`~robprune_deploy.errors.RobPruneError` subclass naming the argument
(:class:`ArgumentError` is also a ``TypeError`` and a ``ValueError``), never a ``StopIteration`` or
an ``IndexError`` from deep inside torch. Every batch is checked as it is used, not only the first.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn

from robprune_deploy.errors import ArgumentError, DatasetError, ShapeError

Batch = tuple[torch.Tensor, torch.Tensor]


def check_model(model: Any, where: str) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise ArgumentError(f"{where}: model must be a torch.nn.Module, got {type(model).__name__}")
    if next(model.parameters(), None) is None:
        raise ArgumentError(f"{where}: model has no parameters to prune")
    return model


def check_fraction(value: Any, name: str, *, open_interval: bool) -> float:
    """A finite real number in ``(0, 1)`` (``open_interval``) or ``[0, 1]``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentError(f"{name}: must be a number, got {type(value).__name__}")
    value = float(value)
    inside = 0 < value < 1 if open_interval else 0 <= value <= 1
    if not math.isfinite(value) or not inside:
        raise ArgumentError(f"{name}: must lie in {'(0, 1)' if open_interval else '[0, 1]'}, got {value}")
    return value


def check_count(value: Any, name: str, low: int = 0, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ArgumentError(f"{name}: must be an integer, got {type(value).__name__}")
    value = int(value)
    if value < low or (high is not None and value > high):
        raise ArgumentError(f"{name}: must lie in [{low}, {high if high is not None else 'inf'}], got {value}")
    return value


def _split(item: Any, where: str, index: int) -> Batch:
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        raise ArgumentError(f"{where}: batch {index} must be a pair (inputs, labels), got {type(item).__name__}")
    x, y = item
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise ArgumentError(f"{where}: batch {index} must hold tensors, got ({type(x).__name__}, {type(y).__name__})")
    return x, y


def check_batch(
    item: Any, where: str, index: int, image_shape: tuple[int, ...] | None, num_classes: int | None
) -> Batch:
    """One ``(x, y)`` batch: ``x`` a float N x C x H x W tensor in [0, 1], ``y`` N integer labels.

    :param image_shape: ``(C, H, W)`` every batch must share (None: the first batch sets it).
    :param num_classes: labels must lie in ``[0, num_classes)`` (None: not checked).
    """
    x, y = _split(item, where, index)
    if x.dim() != 4 or len(x) == 0 or not x.is_floating_point():
        raise ShapeError(
            f"{where}: batch {index}: inputs must be a float image batch N x C x H x W, got {list(x.shape)}"
        )
    if image_shape is not None and tuple(x.shape[1:]) != tuple(image_shape):
        raise ShapeError(f"{where}: batch {index}: images are {tuple(x.shape[1:])}, earlier ones {tuple(image_shape)}")
    if y.dim() != 1 or len(y) != len(x) or y.is_floating_point() or y.dtype == torch.bool:
        raise ShapeError(f"{where}: batch {index}: labels must be {len(x)} integers, got {y.dtype} {list(y.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise DatasetError(f"{where}: batch {index}: inputs hold NaN or inf")
    if float(x.min()) < 0 or float(x.max()) > 1:
        raise DatasetError(f"{where}: batch {index}: inputs must lie in [0, 1] (normalization belongs in the model)")
    if num_classes is not None and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        wrong = int(y.min()) if int(y.min()) < 0 else int(y.max())
        raise DatasetError(f"{where}: batch {index}: label {wrong} is outside the model's classes [0, {num_classes})")
    return x, y


class CheckedBatches:
    """A re-iterable view of ``source`` that checks every batch as it is yielded.

    :param num_classes: set once known (e.g. from the model's output on the first batch).
    """

    def __init__(self, source: Iterable[Any], where: str, num_classes: int | None = None) -> None:
        self.source, self.where, self.num_classes = source, where, num_classes
        self.image_shape: tuple[int, ...] | None = None

    def first(self) -> Batch:
        """The first batch. :raises DatasetError: when there is none."""
        for batch in self:
            return batch
        raise DatasetError(f"{self.where}: the dataset yields no batches")

    def __iter__(self) -> Iterator[Batch]:
        try:
            iterator = iter(self.source)
        except TypeError:
            raise ArgumentError(f"{self.where}: dataset must be iterable, got {type(self.source).__name__}") from None
        for index, item in enumerate(iterator):
            x, y = check_batch(item, self.where, index, self.image_shape, self.num_classes)
            self.image_shape = tuple(x.shape[1:])
            yield x, y


def model_classes(model: nn.Module, x: torch.Tensor, where: str) -> int:
    """The number of classes ``model`` predicts for inputs like ``x``.

    :raises ShapeError: when the model cannot take ``x`` or does not return ``(N, classes)`` logits.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits = model(x[:1].to(device))
    except (RuntimeError, ValueError, IndexError) as exc:
        detail = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
        raise ShapeError(f"{where}: the model cannot take inputs of shape {list(x.shape[1:])} ({detail})") from None
    finally:
        model.train(was_training)
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[1] < 2:
        shape = list(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ShapeError(f"{where}: the model must return N x classes logits (2 or more classes), got {shape}")
    return int(logits.shape[1])


def check_batch_list(batches: Any, where: str) -> list[Batch]:
    """A non-empty list of checked ``(x, y)`` image batches of one shape (for repeated passes).

    :raises DatasetError: when there are no batches.
    """
    checked = CheckedBatches(batches, where)
    listed = list(checked)
    if not listed:
        raise DatasetError(f"{where}: no batches to evaluate")
    return listed
