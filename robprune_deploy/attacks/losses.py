"""Per-example attack losses on logits: cross-entropy, the margin and the DLR losses of Croce & Hein.

Every function returns one value per example (no reduction), larger meaning "closer to adversarial",
so an attack maximizes it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``CE(logits, y)`` per example."""
    return F.cross_entropy(logits.float(), y, reduction="none")


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``z_y - max_{j != y} z_j``: positive while ``y`` is predicted, negative once the input is adversarial."""
    logits = logits.float()
    true = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.scatter(1, y[:, None], float("-inf"))
    return true - others.max(1).values


def dlr(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Untargeted Difference of Logits Ratio: ``-(z_y - max_{j != y} z_j) / (z_pi1 - z_pi3)``.

    Invariant to shifting and scaling the logits, so a model cannot hide behind saturated softmax
    outputs (Croce & Hein 2020, eq. 5). Needs at least three classes.
    """
    logits = logits.float()
    ordered = logits.sort(1, descending=True).values
    return -margin(logits, y) / (ordered[:, 0] - ordered[:, 2] + 1e-12)


def dlr_targeted(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Targeted DLR: ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)`` (Croce & Hein 2020, eq. 6).

    Needs at least four classes.
    """
    logits = logits.float()
    ordered = logits.sort(1, descending=True).values
    gap = logits.gather(1, y[:, None]).squeeze(1) - logits.gather(1, target[:, None]).squeeze(1)
    return -gap / (ordered[:, 0] - 0.5 * (ordered[:, 2] + ordered[:, 3]) + 1e-12)
