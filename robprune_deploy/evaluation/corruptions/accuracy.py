"""Accuracy under common corruptions, kept per example so that two models evaluated on the same
inputs and seed can be compared pairwise (the same corrupted image for both).

The mean corruption accuracy is the benchmark's summary (Hendrycks & Dietterich 2019; RobustBench
reports it for CIFAR-10-C): the accuracy averaged over every (type, severity) cell evaluated, each
cell weighing the same. Per example, :attr:`CorruptionAccuracy.per_example` is the fraction of
cells the example is classified correctly in; its mean is the mean corruption accuracy, so a
paired difference of two models is the mean of their per-example differences.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from robprune_deploy.errors import ArgumentError
from robprune_deploy.evaluation.corruptions.apply import (
    CORRUPTIONS,
    SEVERITIES,
    SUBSTITUTED,
    check_images,
    check_severity,
    check_types,
    corrupt,
)

Predict = Callable[[np.ndarray], np.ndarray]
"""Logits (``N x classes``) or labels (``N``) for a float32 ``N x C x H x W`` batch: an
onnxruntime session's ``predict``, or a torch model wrapped."""


@dataclass(frozen=True)
class CorruptionAccuracy:
    """Per-example outcomes on the clean inputs and on every (type, severity) cell.

    :param clean_correct: ``N`` booleans, the model right on the clean input.
    :param correct: per ``(type, severity)``, ``N`` booleans, right on the corrupted input.
    """

    types: tuple[str, ...]
    severities: tuple[int, ...]
    seed: int
    clean_correct: np.ndarray
    correct: dict[tuple[str, int], np.ndarray]

    @property
    def examples(self) -> int:
        return int(self.clean_correct.size)

    @property
    def clean_accuracy(self) -> float:
        return float(self.clean_correct.mean()) if self.examples else 0.0

    @property
    def accuracy(self) -> dict[tuple[str, int], float]:
        """Accuracy per (type, severity)."""
        return {cell: float(right.mean()) if right.size else 0.0 for cell, right in self.correct.items()}

    @property
    def type_accuracy(self) -> dict[str, float]:
        """Accuracy per type, averaged over the severities evaluated."""
        cells = self.accuracy
        return {t: float(np.mean([cells[(t, s)] for s in self.severities])) for t in self.types}

    @property
    def per_example(self) -> np.ndarray:
        """Per example, the fraction of (type, severity) cells it is classified correctly in."""
        return np.mean(np.stack([self.correct[(t, s)] for t in self.types for s in self.severities]), axis=0)

    @property
    def mean_accuracy(self) -> float:
        """The mean corruption accuracy: every (type, severity) cell weighs the same."""
        return float(np.mean(list(self.accuracy.values())))

    def to_dict(self) -> dict[str, Any]:
        return {
            "examples": self.examples,
            "seed": self.seed,
            "types": list(self.types),
            "severities": list(self.severities),
            "substituted": sorted(SUBSTITUTED.intersection(self.types)),
            "clean_acc": self.clean_accuracy,
            "mean_corruption_acc": self.mean_accuracy,
            "type_acc": self.type_accuracy,
            "cell_acc": {f"{t}/{s}": a for (t, s), a in self.accuracy.items()},
        }


def _check_severities(severities: object) -> tuple[int, ...]:
    if isinstance(severities, str) or not isinstance(severities, Sequence) or not severities:
        raise ArgumentError("severities: must be a non-empty list of integers from 1 to 5")
    checked = tuple(check_severity(s, f"severities[{i}]") for i, s in enumerate(severities))
    if len(set(checked)) != len(checked):
        raise ArgumentError(f"severities: must not repeat a severity, got {list(severities)!r}")
    return checked


def _labels(predict: Predict, x: np.ndarray, batch_size: int) -> np.ndarray:
    parts = []
    for start in range(0, len(x), batch_size):
        out = np.asarray(predict(x[start : start + batch_size]))
        parts.append(out.argmax(1) if out.ndim == 2 else out)
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def corruption_accuracy(
    predict: Predict,
    x: torch.Tensor,
    y: torch.Tensor | np.ndarray,
    types: Sequence[str] = tuple(CORRUPTIONS),
    severities: Sequence[int] = SEVERITIES,
    seed: int = 0,
    *,
    batch_size: int = 256,
) -> CorruptionAccuracy:
    """Classify ``x`` (``N x C x H x W`` in [0, 1]) clean and under each corruption type at each
    severity (:func:`~robprune_deploy.evaluation.corruptions.apply.corrupt` with ``seed``)."""
    check_images(x)
    labels = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    if labels.ndim != 1 or len(labels) != len(x) or not np.issubdtype(labels.dtype, np.integer):
        raise ArgumentError(f"y: must be {len(x)} integer labels, got shape {labels.shape} of {labels.dtype}")
    chosen = check_types(types)
    levels = _check_severities(severities)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ArgumentError(f"seed: must be an integer >= 0, got {seed!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ArgumentError(f"batch_size: must be an integer >= 1, got {batch_size!r}")
    clean = _labels(predict, x.detach().cpu().numpy().astype(np.float32), batch_size) == labels
    correct = {}
    for name in chosen:
        for severity in levels:
            images = corrupt(x, name, severity, int(seed)).cpu().numpy().astype(np.float32)
            correct[(name, severity)] = _labels(predict, images, batch_size) == labels
    return CorruptionAccuracy(chosen, levels, int(seed), clean, correct)
