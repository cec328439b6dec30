"""Per-example attack losses on logits: cross-entropy, the margin and the DLR losses of Croce & Hein.

Every function returns one value per example (no reduction), larger meaning "closer to adversarial",
so an attack maximizes it.

The DLR losses divide by a gap between sorted logits, so they need enough classes: untargeted DLR
the 3rd-largest logit (3 classes), targeted DLR the 3rd and 4th (4 classes), as the reference code's
``check_n_classes`` warns. Below that the margins take their place (:func:`margin_loss`,
:func:`margin_targeted`): DLR without its scale, and like DLR, unlike cross-entropy, they cannot
saturate. (Dividing a 3-class targeted margin by ``z_pi1 - z_pi3`` instead is no way out: when the
target is the least likely class that ratio is the constant -1, with no gradient at all.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DLR_MIN_CLASSES = 3
"""Classes the untargeted DLR loss needs."""
DLR_TARGETED_MIN_CLASSES = 4
"""Classes the targeted DLR loss needs."""


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
    """``max_{j != y} z_j - z_y`` (the Carlini-Wagner loss): untargeted DLR without its scale."""
    return -margin(logits, y)


def margin_targeted(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``z_t - z_y``: targeted DLR without its scale (on 2 classes the same as :func:`margin_loss`)."""
    logits = logits.float()
    return logits.gather(1, target[:, None]).squeeze(1) - logits.gather(1, y[:, None]).squeeze(1)


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

    Needs at least four classes.
    """
    _require_classes(logits, DLR_TARGETED_MIN_CLASSES, "targeted DLR")
    logits = logits.float()
    ordered = logits.sort(1, descending=True).values
    gap = logits.gather(1, y[:, None]).squeeze(1) - logits.gather(1, target[:, None]).squeeze(1)
    return -gap / (ordered[:, 0] - 0.5 * (ordered[:, 2] + ordered[:, 3]) + 1e-12)
