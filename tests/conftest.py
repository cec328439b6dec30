"""Shared fixtures: the embedded digits data and small, really trained models."""

from __future__ import annotations

import os

import pytest
import torch

from robprune_deploy.data import DatasetBundle, build_dataset

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def digits() -> DatasetBundle:
    """scikit-learn's digits at 16x16, the project's embedded default data."""
    return build_dataset("digits", None, 16)


@pytest.fixture(scope="session")
def robust_cnn_state(digits: DatasetBundle) -> dict[str, torch.Tensor]:
    """A digits CNN briefly adversarially trained (PGD-3, eps 0.2): a realistic starting point."""
    from robprune_deploy.attacks import ThreatModel
    from robprune_deploy.data import make_loader
    from robprune_deploy.models import build_model
    from robprune_deploy.training import TrainingPlan, adversarial_train

    torch.manual_seed(0)
    model = build_model("digits_cnn", 10, 1, digits.mean, digits.std)
    adversarial_train(
        model, TrainingPlan(epochs=4, lr=0.05), ThreatModel(0.2, 0.07, 3),
        lambda e: make_loader(digits.train, 32, shuffle=True, epoch=e), device=torch.device("cpu"),
        stage="fixture", show_progress=False,
    )
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture()
def robust_cnn(digits: DatasetBundle, robust_cnn_state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """A fresh copy of the briefly adversarially trained digits CNN."""
    from robprune_deploy.models import build_model

    model = build_model("digits_cnn", 10, 1, digits.mean, digits.std)
    model.load_state_dict(robust_cnn_state)
    return model
