"""White-box attacks in torch (PGD, FGSM), the TRADES and MART losses, and the black-box Square attack."""

from robprune_deploy.attacks.pgd import ThreatModel, fgsm, pgd
from robprune_deploy.attacks.robust_loss import (
    RobustLoss,
    craft_adversarial,
    loss_and_adversarial_logits,
    loss_on_adversarial,
    mart_loss,
    mart_objective,
    robust_loss,
    trades_loss,
)

__all__ = [
    "RobustLoss",
    "ThreatModel",
    "craft_adversarial",
    "fgsm",
    "loss_and_adversarial_logits",
    "loss_on_adversarial",
    "mart_loss",
    "mart_objective",
    "pgd",
    "robust_loss",
    "trades_loss",
]
