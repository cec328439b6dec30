"""Adversarial training (PGD-AT, TRADES, MART; optionally AWP) with resumable per-epoch checkpoints, and evaluation."""

from robprune_deploy.training.awp import AWPPlan
from robprune_deploy.training.evaluation import accuracy, evaluate_robustness, recalibrate_batchnorm
from robprune_deploy.training.trainer import (
    EpochSelection,
    TrainingPlan,
    adversarial_train,
    check_batch,
    check_finite_state,
    epoch_seed,
)

__all__ = [
    "AWPPlan",
    "EpochSelection",
    "TrainingPlan",
    "accuracy",
    "adversarial_train",
    "check_batch",
    "check_finite_state",
    "epoch_seed",
    "evaluate_robustness",
    "recalibrate_batchnorm",
]
