"""``runtime.threads`` of a recipe, applied at the start of every command and sized by its model.

The policy itself (cores allowed, load, spinning) is :mod:`robprune_deploy.runtime.thread_policy`; this
module measures what ``auto`` needs from the recipe: the forward multiply-accumulates of one
training batch of its model, counted on the meta device (no weights allocated, nothing computed).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from robprune_deploy.data import DatasetBundle, build_dataset
from robprune_deploy.pipeline.recipe_model import recipe_model
from robprune_deploy.recipe import Recipe
from robprune_deploy.runtime import ThreadChoice, apply_thread_policy
from robprune_deploy.runtime.thread_policy import omp_num_threads
from robprune_deploy.surgery.counting import dense_macs, traced_forward


def forward_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Dense Conv2d and Linear multiply-accumulates of ``model`` for one input of ``input_shape``
    (on the meta device nothing is computed; on another, one forward pass of zeros)."""
    total = 0

    def count(module: nn.Module, _: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        total += dense_macs(module, output)

    device = next(model.parameters()).device
    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    traced_forward(model, torch.zeros((1, *input_shape), device=device), hooks)
    return total


def batch_work(recipe: Recipe, data: Callable[[], DatasetBundle]) -> int | None:
    """Forward MACs of one ``data.batch_size`` batch of the recipe's model, ``None`` when the data or
    the model cannot be built: the size only refines ``auto``, and the command's own checks report
    the problem with its usual message."""

    try:
        bundle = data()
        with torch.device("meta"):
            model = recipe_model(recipe, bundle)
        return forward_macs(model, bundle.input_shape) * recipe.data.batch_size
    except Exception:  # any failure here is met again, and reported, where the command builds them
        return None


def auto_work_macs(recipe: Recipe, data: Callable[[], DatasetBundle] | None = None) -> int | None:
    """The work ``auto`` is sized by (:func:`batch_work`); not measured when nothing would use it."""
    if recipe.runtime.threads != "auto" or omp_num_threads() is not None:
        return None
    d = recipe.data
    return batch_work(recipe, data or (lambda: build_dataset(d.name, d.root, d.image_size, d.augment)))


def apply_recipe_threads(
    recipe: Recipe, data: Callable[[], DatasetBundle] | None = None, *, announce: bool = True
) -> ThreadChoice:
    """Apply ``recipe.runtime.threads`` to this process (once; see :func:`apply_thread_policy`).

    :param data: the recipe's data, when the caller holds it (built from the recipe otherwise).
    """
    return apply_thread_policy(recipe.runtime.threads, work_macs=auto_work_macs(recipe, data), announce=announce)
