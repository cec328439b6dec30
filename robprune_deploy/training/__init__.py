"""Adversarial training (PGD-AT, TRADES, MART; optionally AWP, or FGSM-RS in place of PGD) with resumable
per-epoch checkpoints, and evaluation."""

from robprune_deploy.training.awp import AWPPlan
from robprune_deploy.training.evaluation import accuracy, evaluate_robustness, recalibrate_batchnorm
from robprune_deploy.training.fast_at import CollapseGuard, FastATPlan, OnCollapse, fgsm_rs
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
    "CollapseGuard",
    "EpochSelection",
    "FastATPlan",
    "OnCollapse",
    "TrainingPlan",
    "accuracy",
    "adversarial_train",
    "check_batch",
    "check_finite_state",
    "epoch_seed",
    "evaluate_robustness",
    "fgsm_rs",
    "recalibrate_batchnorm",
]
