"""The evaluation examples a gate measured, identified by their indices and a hash of their content.

The hash is SHA-256 over a header (``robprune-examples/1``, the count and the shape of one input as
canonical JSON), the indices as little-endian int64, then, example by example in the gate's
order, each input's float32 bytes and its label as little-endian int64. It is computed from the
tensors the gate measured, not from the data read again, and does not depend on the batch size.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from robprune_deploy.data.loaders import seeded_subset
from robprune_deploy.release.canonical import canonical_bytes

HEADER = "robprune-examples/1"


class _EvaluationSource(Protocol):
    """What :func:`examples_of` reads off a run context (:class:`~robprune_deploy.pipeline.RunContext`)."""

    @property
    def eval_split(self) -> str: ...
    @property
    def test_set(self) -> Dataset: ...
    @property
    def val_set(self) -> Dataset | None: ...
    @property
    def recipe(self) -> Any: ...


@dataclass(frozen=True)
class Examples:
    """The evaluation subset: which examples of which split, and the hash of what they hold."""

    dataset: str
    split: str
    seed: int
    indices: list[int]
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "split": self.split,
            "seed": self.seed,
            "count": len(self.indices),
            "indices": self.indices,
            "sha256": self.sha256,
        }


def examples_sha256(indices: Sequence[int], batches: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> str:
    """The content hash of the examples ``indices`` whose tensors are ``batches`` (see the module)."""
    shape = list(batches[0][0].shape[1:]) if batches else []
    digest = hashlib.sha256(canonical_bytes({"format": HEADER, "count": len(indices), "shape": shape}))
    digest.update(np.asarray(list(indices), dtype="<i8").tobytes())
    for x, y in batches:
        inputs = x.detach().cpu().to(torch.float32).contiguous().numpy().astype("<f4")
        labels = y.detach().cpu().numpy().astype("<i8")
        for one, label in zip(inputs, labels, strict=True):
            digest.update(one.tobytes())
            digest.update(label.tobytes())
    return digest.hexdigest()


def examples_of(ctx: _EvaluationSource, dataset: str, batches: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> Examples:
    """The examples of ``batches`` (the gate's evaluation subset of ``ctx``): their indices in the
    split, chosen by the same :func:`~robprune_deploy.data.loaders.seeded_subset` call, and their hash."""
    source = ctx.val_set if ctx.eval_split == "val" and ctx.val_set is not None else ctx.test_set
    ev = ctx.recipe.evaluate
    subset = seeded_subset(source, ev.num_examples, ev.subset_seed)
    indices = [int(i) for i in subset.indices] if isinstance(subset, Subset) else list(range(len(subset)))  # type: ignore[arg-type]
    return Examples(dataset, ctx.eval_split, int(ev.subset_seed), indices, examples_sha256(indices, batches))
