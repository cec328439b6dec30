"""Classifiers with normalization inside the model, built by name from :data:`MODELS`."""

from robprune_deploy.models.factory import MODELS, build_model
from robprune_deploy.models.normalize import NormalizedClassifier, Normalize

__all__ = ["MODELS", "NormalizedClassifier", "Normalize", "build_model"]
