"""Preflight checks that need the model and the data, run before a run writes anything."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from robprune_deploy.data.labels import check_labels, labels_of
from robprune_deploy.data.loaders import seeded_subset
from robprune_deploy.errors import NumericalError, QuantizationError, RecipeError, ShapeError
from robprune_deploy.export.onnx_export import EXPORTER_OPSET
from robprune_deploy.gate.validation import check_runtimes

if TYPE_CHECKING:
    from robprune_deploy.pipeline.run_data import RunData


def check_model_fits_data(ctx: RunData, model: nn.Module) -> None:
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


def check_export_opset(ctx: RunData, model: nn.Module) -> None:
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


def preflight(data: RunData, out_dir: Path) -> dict[str, Any]:
    """Check every input a run will read (data root and images, model name, checkpoint, the
    model on the data's inputs, the evaluation subset's labels, the export opset) before
    anything is written, so bad input never leaves a half-made output folder.

    :returns: the ``paths.*`` summary entries: the folders and files the run reads and writes, resolved.
    """
    from robprune_deploy.checkpoints import load_model_weights

    recipe = data.recipe
    model = data.new_model()
    problems = recipe.split_problems()
    if problems:
        raise RecipeError(problems[0])
    _ = data.split_indices  # a val_size that leaves no training image fails here, before any file
    if recipe.model.checkpoint is not None:
        load_model_weights(model, recipe.model.checkpoint)
    check_model_fits_data(data, model)
    check_export_opset(data, model)
    quantize = recipe.quantize
    if quantize.enabled and quantize.calibration_size > len(data.train_set):
        raise QuantizationError(
            f"quantize.calibration_size: {quantize.calibration_size} calibration images asked for, the "
            f"training split holds {len(data.train_set)}"
        )
    paths = {"paths.out_dir": str(out_dir.resolve())}
    if recipe.data.root is not None:
        paths["paths.data_root"] = str(Path(recipe.data.root).expanduser().resolve())
    if recipe.model.checkpoint is not None:
        paths["paths.checkpoint"] = str(Path(recipe.model.checkpoint).expanduser().resolve())
    return paths
