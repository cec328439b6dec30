"""The model a recipe asks for, untrained: what every stage, the thread policy and the gate build."""

from __future__ import annotations

from robprune_deploy.data import DatasetBundle
from robprune_deploy.models import NormalizedClassifier, build_model
from robprune_deploy.recipe import Recipe


def recipe_model(recipe: Recipe, data: DatasetBundle) -> NormalizedClassifier:
    """The untrained model ``recipe`` asks for, shaped for ``data``."""
    return build_model(
        recipe.model.name,
        data.num_classes,
        data.input_shape[0],
        data.mean,
        data.std,
        recipe.data.channels,
        image_size=data.input_shape[1],
        kwargs=recipe.model.kwargs,
    )
