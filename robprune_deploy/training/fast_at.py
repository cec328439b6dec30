"""Fast adversarial training: FGSM with a random start (Wong, Rice and Kolter 2020, "Fast is better
than free: Revisiting adversarial training") and its guard against catastrophic overfitting.

One FGSM-RS step starts from a uniform point of the L-inf ball, ``delta ~ U(-eps, eps)``, takes one
signed-gradient step of ``alpha = 1.25 eps`` and projects back onto the ball (and [0, 1]): one
forward/backward pass per batch instead of PGD-k's k. The paper's failure mode is *catastrophic
overfitting*: within an epoch the network learns to defeat the single step while PGD accuracy
collapses to about zero. The paper's cure is early stopping on the PGD accuracy of one batch,
measured every epoch; :class:`CollapseGuard` measures it on a fixed batch held out for the purpose
and either stops (keeping the best weights) or falls back to PGD-AT for the remaining epochs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

import torch
from torch import nn

from robprune_deploy.attacks import ThreatModel, pgd

FGSM_ALPHA = 1.25
"""The step of FGSM-RS in units of eps (Wong et al. 2020, section 4: 1.25 eps)."""
GUARD_DROP = 0.2
"""Collapse when the guard's PGD accuracy falls this far below its best so far (Wong et al.'s early
stopping stops when a batch's PGD accuracy drops by more than 0.2 from one epoch to the next)."""
GUARD_GAP = 0.3
"""Collapse when FGSM accuracy exceeds PGD accuracy on the guard batch by more than this: the
signature of catastrophic overfitting even when PGD accuracy was never high [defined here]."""


class OnCollapse(str, Enum):
    """What training does once the guard sees a collapse; either way the best weights are restored first."""

    STOP = "stop"
    """End the stage with the weights (and optimizer state) of the guard's best epoch."""
    PGD = "pgd"
    """Continue from the best epoch's weights with PGD-AT (the recipe's ``attack.train_steps``)."""


@dataclass(frozen=True)
class FastATPlan:
    """Train with FGSM-RS instead of the PGD of the threat model (PGD-AT's outer loss is unchanged)."""

    alpha: float = FGSM_ALPHA

    def threat(self, threat: ThreatModel) -> ThreatModel:
        """FGSM-RS as a one-step PGD of ``threat``: uniform start, step ``alpha * eps`` (at most 1)."""
        return ThreatModel(threat.eps, min(self.alpha * threat.eps, 1.0), 1, random_start=True, bf16=threat.bf16)


def fgsm_rs(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: float = FGSM_ALPHA) -> torch.Tensor:
    """FGSM with a random start: ``clip(x + delta + alpha * eps * sign(grad))`` with ``delta ~ U(-eps, eps)``."""
    return pgd(model, x, y, FastATPlan(alpha).threat(ThreatModel(eps, min(eps, 1.0), 1)))


@dataclass
class CollapseGuard:
    """Watches the PGD and FGSM accuracy of a fixed batch after every epoch of fast adversarial training.

    An epoch *collapses* when its PGD accuracy is more than ``drop`` below the best so far, or more
    than ``gap`` below its FGSM accuracy (``None`` disables a rule). :func:`adversarial_train` then
    restores the best epoch's weights and does what ``on_collapse`` says; it fills in
    ``best_epoch``, ``best_pgd_acc`` and ``collapsed_epoch`` (zero-based, -1: none).

    :param batch: the fixed ``(x, y)`` the accuracies are measured on (eval mode; validation images
        in the pipeline).
    :param threat: the threat the PGD accuracy is measured against (its steps are PGD's);
        FGSM is one step of ``eps`` from the clean image.
    """

    batch: tuple[torch.Tensor, torch.Tensor]
    threat: ThreatModel
    drop: float | None = GUARD_DROP
    gap: float | None = GUARD_GAP
    on_collapse: OnCollapse = OnCollapse.STOP
    seed: int = 0
    best_epoch: int = -1
    best_pgd_acc: float = -math.inf
    collapsed_epoch: int = -1

    def measure(self, model: nn.Module) -> tuple[float, float]:
        """``(pgd_acc, fgsm_acc)`` of ``model`` on the guard batch, in eval mode, PGD's start seeded."""
        x, y = self.batch
        device = next(model.parameters()).device
        x, y = x.to(device), y.to(device)
        was_training = model.training
        model.eval()
        try:
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(self.seed)
                x_pgd = pgd(model, x, y, self.threat)
            x_fgsm = pgd(model, x, y, ThreatModel(self.threat.eps, self.threat.eps, 1, random_start=False))
            with torch.no_grad():
                pgd_acc = float((model(x_pgd).argmax(1) == y).float().mean())
                fgsm_acc = float((model(x_fgsm).argmax(1) == y).float().mean())
        finally:
            model.train(was_training)
        return pgd_acc, fgsm_acc

    def collapse_reason(self, pgd_acc: float, fgsm_acc: float) -> str | None:
        """Why an epoch with these accuracies has collapsed, or ``None`` when it has not."""
        if self.drop is not None and self.best_epoch >= 0 and pgd_acc < self.best_pgd_acc - self.drop:
            return f"PGD accuracy {pgd_acc:.3f} fell more than {self.drop:g} below its best ({self.best_pgd_acc:.3f})"
        if self.gap is not None and fgsm_acc - pgd_acc > self.gap:
            return f"PGD accuracy {pgd_acc:.3f} is more than {self.gap:g} below FGSM accuracy {fgsm_acc:.3f}"
        return None

    def observe(self, epoch: int, pgd_acc: float, fgsm_acc: float) -> tuple[bool, str | None]:
        """Record ``epoch``'s accuracies: ``(improved, collapse_reason)``.

        ``improved`` says the epoch is the new best (its weights are the ones to keep); a collapsed
        epoch is never the best, and only the first collapse is recorded.
        """
        reason = self.collapse_reason(pgd_acc, fgsm_acc)
        if reason is not None:
            if self.collapsed_epoch < 0:
                self.collapsed_epoch = epoch
            return False, reason
        if pgd_acc > self.best_pgd_acc:
            self.best_epoch, self.best_pgd_acc = epoch, pgd_acc
            return True, None
        return False, None

    def state(self) -> dict[str, float]:
        """What a checkpoint needs to resume the guard."""
        return {
            "best_epoch": float(self.best_epoch),
            "best_pgd_acc": self.best_pgd_acc,
            "collapsed_epoch": float(self.collapsed_epoch),
        }

    def load_state(self, state: dict[str, float]) -> None:
        self.best_epoch = int(state["best_epoch"])
        self.best_pgd_acc = float(state["best_pgd_acc"])
        self.collapsed_epoch = int(state["collapsed_epoch"])
