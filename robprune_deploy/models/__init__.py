"""Classifiers with normalization inside the model, built by name from :data:`MODELS`."""

from robprune_deploy.models.factory import MODELS, build_model
from robprune_deploy.models.normalize import Normalize, NormalizedClassifier

__all__ = ["MODELS", "Normalize", "NormalizedClassifier", "build_model"]
