"""Per-example attack losses on logits: cross-entropy, the margin and the DLR losses of Croce & Hein.

Every function returns one value per example (no reduction), larger meaning "closer to adversarial",
so an attack maximizes it.

The DLR losses divide by a gap between sorted logits that excludes the true and the target class,
so they need enough classes: untargeted DLR the 3rd-largest logit (3 classes), targeted DLR the 3rd
and 4th (4 classes; with 3 classes the 3rd stands in for both, see :func:`dlr_targeted`). With 2
classes there is nothing to divide by, and the plain margin (:func:`margin_loss`) takes DLR's place:
like DLR, and unlike cross-entropy, it cannot saturate.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DLR_MIN_CLASSES = 3
"""Classes the untargeted DLR loss needs (the reference code's ``check_n_classes`` says the same)."""


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``CE(logits, y)`` per example."""
    return F.cross_entropy(logits.float(), y, reduction="none")


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``z_y - max_{j != y} z_j``: positive while ``y`` is predicted, negative once the input is adversarial."""
    logits = logits.float()
    true = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.scatter(1, y[:, None], float("-inf"))
    return true - others.max(1).values


def margin_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``max_{j != y} z_j - z_y`` (the Carlini-Wagner loss): DLR without its scale, for 2-class models.

    With two classes the untargeted and the targeted margin are the same function.
    """
    return -margin(logits, y)


def _require_classes(logits: torch.Tensor, needed: int, loss: str) -> None:
    if logits.shape[1] < needed:
        raise ValueError(f"the {loss} loss needs at least {needed} classes, the logits have {logits.shape[1]}")


def dlr(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Untargeted Difference of Logits Ratio: ``-(z_y - max_{j != y} z_j) / (z_pi1 - z_pi3)``.

    Invariant to shifting and scaling the logits, so a model cannot hide behind saturated softmax
    outputs (Croce & Hein 2020, eq. 5). Needs at least three classes.
    """
    _require_classes(logits, DLR_MIN_CLASSES, "DLR")
    logits = logits.float()
    ordered = logits.sort(1, descending=True).values
    return -margin(logits, y) / (ordered[:, 0] - ordered[:, 2] + 1e-12)


def dlr_targeted(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Targeted DLR: ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)`` (Croce & Hein 2020, eq. 6).

    The denominator averages the logits ranked 3rd and 4th, the ones least likely to be ``y`` or
    ``t``. A 3-class model has no 4th: the 3rd stands alone (``z_pi1 - z_pi3``, the untargeted
    DLR's scale), which keeps the loss shift- and scale-invariant. Needs at least three classes.
    """
    _require_classes(logits, DLR_MIN_CLASSES, "targeted DLR")
    logits = logits.float()
    ordered = logits.sort(1, descending=True).values
    gap = logits.gather(1, y[:, None]).squeeze(1) - logits.gather(1, target[:, None]).squeeze(1)
    low = ordered[:, 2:4].mean(1)
    return -gap / (ordered[:, 0] - low + 1e-12)
