"""``export_onnx``: a stripped torch model to a checked ONNX file, written atomically."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping
from pathlib import Path

import onnx
import torch
from torch import nn

from robprune_deploy.atomic import atomic_path
from robprune_deploy.errors import OnnxModelError
from robprune_deploy.masking import has_masks

INPUT_NAME = "input"
OUTPUT_NAME = "logits"

log = logging.getLogger(__name__)


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    example_input: torch.Tensor,
    *,
    opset: int = 18,
    dynamic_batch: bool = True,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Export ``model`` (eval mode, on CPU) with the dynamo exporter and check the result.

    The graph has one input ``"input"`` (N x C x H x W, N dynamic when ``dynamic_batch``) and one
    output ``"logits"``. ``metadata`` is stored in the model's ``metadata_props`` (the pipeline
    records algorithm, granularity and claimed sparsity there for the gate's audit).

    :raises OnnxModelError: when the model still carries masks (strip it first) or the export or
        the full ``onnx.checker`` check fails.
    """
    if has_masks(model):
        raise OnnxModelError("export_onnx: the model still carries masks; export PruningResult.strip()")
    target = Path(path)
    model = model.eval().cpu()
    example = example_input[:1].detach().cpu()
    # A tuple matches the forward's inputs by position, whatever its argument is called (x, input, ...).
    dynamic = ({0: torch.export.Dim("batch", min=1, max=65536)},) if dynamic_batch else None
    with atomic_path(target) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                model,
                (example,),
                str(tmp),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                opset_version=opset,
                dynamo=True,
                dynamic_shapes=dynamic,
                verbose=False,
            )
        except Exception as exc:  # the exporter raises many types; report one line
            raise OnnxModelError(
                f"{target}: ONNX export failed ({type(exc).__name__}: {str(exc).splitlines()[0]})"
            ) from exc
        proto = onnx.load(str(tmp))
        for key, value in (metadata or {}).items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, str(value)
        try:
            onnx.checker.check_model(proto, full_check=True)
        except onnx.checker.ValidationError as exc:
            raise OnnxModelError(f"{target}: exported graph fails onnx.checker ({str(exc).splitlines()[0]})") from None
        onnx.save(proto, str(tmp))
    log.info("exported %s (opset %d)", target, opset)
    return target


def load_onnx(path: str | os.PathLike[str]) -> onnx.ModelProto:
    """Load and fully check an ONNX file.

    :raises OnnxModelError: naming the file when it is missing, truncated or corrupted.
    """
    file = Path(path)
    if not file.is_file():
        raise OnnxModelError(f"ONNX file {file}: no such file")
    try:
        proto = onnx.load(str(file))
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:  # protobuf DecodeError, ValidationError, InferenceError
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise OnnxModelError(f"ONNX file {file}: unreadable or corrupted ({first})") from None
    if not proto.graph.node:
        raise OnnxModelError(f"ONNX file {file}: the graph is empty")
    return proto
