"""Per-example outcomes of the shipped model, kept in the run folder as ``outcomes.json``
(``outcomes.int8.json`` for its INT8 model): the ones :func:`~robprune_deploy.evaluation.evaluate_artifact`
recorded in its :class:`~robprune_deploy.evaluation.Robustness`, on the first runtime measured.

A robust accuracy is a mean over examples. Two models measured on the same examples are compared
example by example (exact McNemar, a paired-proportion interval: :mod:`robprune_deploy.statistics`),
which needs the outcomes, not only their means. The file holds, per figure (``clean``, ``pgd``,
``autoattack``, ``threat:<label>``; ``corruption_acc`` with ``cells`` per example), whether each
example was classified correctly, bit-packed
(:func:`~robprune_deploy.statistics.pack_outcomes`) in the order of the evaluation subset, and a
digest of the examples, so that a comparison can check that both runs saw the same ones in the same
order. ``autoattack`` covers the first ``examples`` of the subset its ensemble attacked
(``evaluate.ensemble_examples``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robprune_deploy.errors import CheckpointError
from robprune_deploy.evaluation.robustness import Robustness
from robprune_deploy.statistics import pack_outcomes, unpack_outcomes

OUTCOMES_FILE = "outcomes.json"
OUTCOMES_INT8_FILE = "outcomes.int8.json"
FORMAT = 1


def examples_sha256(batches: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> str:
    """A digest of the inputs and labels of ``batches``, in order: equal digests, the same examples."""
    digest = hashlib.sha256()
    for x, y in batches:
        digest.update(x.detach().cpu().contiguous().numpy().tobytes())
        digest.update(y.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def outcome_record(
    result: Robustness, batches: Sequence[tuple[torch.Tensor, torch.Tensor]], **context: Any
) -> dict[str, Any]:
    """The content of ``outcomes.json`` for ``result`` measured on ``batches``; ``context`` (split,
    subset seed, PGD steps) is stored beside it as given."""
    return {
        "format": FORMAT,
        **context,
        "runtime": result.runtime,
        "precision": result.precision,
        "attacks": result.attacks,
        "examples": result.examples,
        "subset_sha256": examples_sha256(batches),
        "outcomes": {name: _entry(np.asarray(values, dtype=bool)) for name, values in result.outcomes.items()},
    }


def _entry(values: np.ndarray) -> dict[str, Any]:
    """One figure's outcomes: ``N`` booleans, or ``N x cells`` (the corruption cells) packed row by row."""
    entry: dict[str, Any] = {"examples": len(values), "bits": pack_outcomes(values.reshape(-1))}
    if values.ndim == 2:
        entry["cells"] = int(values.shape[1])
    return entry


def _unpacked(entry: dict[str, Any]) -> np.ndarray:
    examples, cells = int(entry["examples"]), entry.get("cells")
    if cells is None:
        return unpack_outcomes(entry["bits"], examples)
    return unpack_outcomes(entry["bits"], examples * int(cells)).reshape(examples, int(cells))


@dataclass(frozen=True)
class StoredOutcomes:
    """``outcomes.json`` read back: the digest of the examples and each figure's per-example verdicts."""

    subset_sha256: str
    examples: int
    figures: dict[str, np.ndarray]
    record: dict[str, Any]

    def accuracy(self, name: str) -> float:
        values = self.figures[name]
        return float(values.mean()) if values.size else 0.0


def read_outcomes(path: Path) -> StoredOutcomes:
    """Read an ``outcomes.json``.

    :raises CheckpointError: naming the file when it is missing or not such a file.
    """
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
        figures = {name: _unpacked(entry) for name, entry in record["outcomes"].items()}
        return StoredOutcomes(str(record["subset_sha256"]), int(record["examples"]), figures, record)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"outcomes file {path}: not readable ({type(exc).__name__}: {exc})") from None
