"""Served the way it will be served: the same predictions whatever the batch size.

A graph can compute on the batch as a whole (batch statistics left in training mode, a branch on
``Shape``, a kernel that is wrong at one batch size), and then the accuracy measured at the
evaluation batch says nothing of the model served one image at a time. The gate runs each model at
batch 1, at the evaluation batch, on the whole subset at once (where clean accuracy is measured)
and at a batch size nothing else feeds it, and compares the predicted classes.

Two batch sizes may legitimately disagree where two logits are tied: kernels of different batch
sizes sum in different orders. A disagreement is a tie only when, at both batch sizes, the two
classes' logits lie within :data:`TIE_TOLERANCE` (relative to the example's largest logit, at
least 1) of each other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

TIE_TOLERANCE = 1e-4
UNSEEN_BATCHES = (7, 11, 13, 17, 19, 23, 29, 31)
"""Candidates for the batch size nothing else feeds the model: small primes, the first one unused."""


def unseen_batch(seen: set[int]) -> int:
    """The first of :data:`UNSEEN_BATCHES` that is not in ``seen``."""
    return next(b for b in UNSEEN_BATCHES if b not in seen)


def logits_in_batches(predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, batch: int) -> np.ndarray:
    """``predict`` on ``x`` fed in consecutive batches of ``batch`` (the last one may be shorter)."""
    return np.concatenate([predict(x[start : start + batch]) for start in range(0, len(x), batch)])


@dataclass(frozen=True)
class BatchConsistency:
    """Predictions of one model at several batch sizes, against those at the evaluation batch.

    :param reference: the evaluation batch size.
    :param accuracy: clean accuracy at each batch size fed.
    :param disagreements: examples whose class differs at some batch size, ties excluded.
    :param ties: examples whose class differs only where two logits are tied.
    :param first: the first disagreement, described, or ``""``.
    """

    reference: int
    accuracy: dict[int, float]
    examples: int
    disagreements: int
    ties: int
    first: str = ""

    def detail(self) -> str:
        sizes = ", ".join(str(b) for b in self.accuracy)
        accuracies = ", ".join(f"{acc:.4f} at {b}" for b, acc in self.accuracy.items())
        tied = f"; {self.ties} tied within {TIE_TOLERANCE:g}" if self.ties else ""
        if not self.disagreements:
            return f"same class at batch sizes {sizes} on all {self.examples} examples{tied}"
        return (
            f"{self.disagreements} of {self.examples} examples change class with the batch size ({self.first}){tied}; "
            f"clean accuracy {accuracies}"
        )


def _tied(a: np.ndarray, b: np.ndarray, p: int, q: int) -> bool:
    """Classes ``p`` (``a``'s argmax) and ``q`` (``b``'s) within the tolerance of each other in both."""
    tolerance = TIE_TOLERANCE * max(1.0, float(np.abs(a).max()), float(np.abs(b).max()))
    return bool(a[p] - a[q] <= tolerance and b[q] - b[p] <= tolerance)


def compare_batches(runs: dict[int, np.ndarray], labels: np.ndarray, reference: int) -> BatchConsistency:
    """:param runs: logits of the same examples at each batch size; ``runs[reference]`` is the reference."""
    base = runs[reference]
    base_class = base.argmax(1)
    changed = np.zeros(len(labels), dtype=bool)
    tied = np.zeros(len(labels), dtype=bool)
    first = ""
    for batch, logits in runs.items():
        classes = logits.argmax(1)
        for i in np.flatnonzero(classes != base_class):
            if _tied(base[i], logits[i], int(base_class[i]), int(classes[i])):
                tied[i] = True
                continue
            if not changed.any():
                first = f"example {i}: class {base_class[i]} at batch {reference}, {classes[i]} at batch {batch}"
            changed[i] = True
    return BatchConsistency(
        reference,
        {batch: float((logits.argmax(1) == labels).mean()) for batch, logits in runs.items()},
        len(labels),
        int(changed.sum()),
        int((tied & ~changed).sum()),
        first,
    )
