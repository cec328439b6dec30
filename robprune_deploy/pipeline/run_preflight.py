"""Preflight checks that need the model and the data, run before a run writes anything."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from robprune_deploy.data.labels import check_labels, labels_of
from robprune_deploy.data.loaders import seeded_subset
from robprune_deploy.errors import NumericalError, RecipeError, ShapeError
from robprune_deploy.export.onnx_export import EXPORTER_OPSET
from robprune_deploy.gate.validation import check_runtimes

if TYPE_CHECKING:
    from robprune_deploy.pipeline.context import RunContext


def check_model_fits_data(ctx: RunContext, model: nn.Module) -> None:
    """The model classifies the data's images into its classes, and the evaluation subset can
    measure accuracy (its labels lie in range and name at least two classes) on registered runtimes.

    :raises ShapeError: when the model cannot take the data's images or gives the wrong outputs.
    :raises DatasetError: for the evaluation subset's labels.
    """
    recipe, data = ctx.recipe, ctx.data
    check_runtimes(recipe.evaluate.runtimes)
    cpus = os.cpu_count() or 1
    if recipe.data.num_workers > cpus:
        raise RecipeError(
            f"data.num_workers {recipe.data.num_workers}: this machine has {cpus} CPUs; "
            f"use at most {cpus} (--set data.num_workers={cpus})"
        )
    example = ctx.example_inputs.cpu()
    where = f"model.name {recipe.model.name} on data {data.name} (images {tuple(example.shape[1:])})"
    model = model.cpu().eval()
    try:
        with torch.no_grad():
            logits = model(example)
    except (RuntimeError, ValueError, IndexError) as exc:
        detail = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
        raise ShapeError(f"{where}: the model cannot take these inputs ({detail})") from None
    if tuple(logits.shape) != (len(example), data.num_classes):
        raise ShapeError(f"{where}: outputs {tuple(logits.shape)}, expected ({len(example)}, {data.num_classes})")
    if not bool(torch.isfinite(logits).all()):
        raise NumericalError(f"{where}: the model's logits are NaN or inf before any training")
    ev = recipe.evaluate
    subset = seeded_subset(ctx.test_set, ev.num_examples, ev.subset_seed)
    check_labels(labels_of(subset), data.num_classes, f"the evaluation subset ({len(subset)} test examples)")  # type: ignore[arg-type]


def check_export_opset(ctx: RunContext, model: nn.Module) -> None:
    """An opset below the exporter's own is reached by conversion, which depends on the graph:
    try it on the untrained model now rather than after hours of training.

    :raises OnnxModelError: naming the supported range when the conversion fails.
    """
    opset = ctx.recipe.export.opset
    if opset >= EXPORTER_OPSET:
        return
    from robprune_deploy.export import export_onnx

    with tempfile.TemporaryDirectory(prefix="robprune-opset-") as folder:
        export_onnx(model.cpu(), Path(folder) / "probe.onnx", ctx.example_inputs.cpu(), opset=opset)
