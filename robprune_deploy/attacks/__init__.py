"""White-box attacks in torch (PGD, FGSM), the TRADES loss, and the black-box Square attack."""

from robprune_deploy.attacks.pgd import ThreatModel, fgsm, pgd
from robprune_deploy.attacks.robust_loss import (
    RobustLoss,
    craft_adversarial,
    loss_on_adversarial,
    robust_loss,
    trades_loss,
)

__all__ = [
    "RobustLoss",
    "ThreatModel",
    "craft_adversarial",
    "fgsm",
    "loss_on_adversarial",
    "pgd",
    "robust_loss",
    "trades_loss",
]
