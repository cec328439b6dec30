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
