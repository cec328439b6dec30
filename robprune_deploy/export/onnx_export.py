"""``export_onnx``: a stripped torch model to a checked ONNX file, written atomically."""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path

import onnx
import torch
from onnx import version_converter
from torch import nn

from robprune_deploy.atomic import atomic_path, storage_problem
from robprune_deploy.errors import ArgumentError, OnnxModelError, OutputError
from robprune_deploy.masking import has_masks

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
EXPORTER_OPSET = 18
"""The opset torch's dynamo exporter writes natively; lower ones are reached by onnx's version converter."""
MAX_OPSET = 23
MIN_OPSET = 13


def onnx_opset(proto: onnx.ModelProto) -> int | None:
    """The default-domain (``ai.onnx``) opset of ``proto``."""
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)


def _to_opset(proto: onnx.ModelProto, opset: int, target: Path) -> onnx.ModelProto:
    """``proto`` converted to ``opset`` (a no-op when it has it already), checked to have it.

    :raises OnnxModelError: naming the supported range when onnx cannot convert this graph.
    """
    if onnx_opset(proto) == opset:
        return proto
    try:
        converted = version_converter.convert_version(proto, opset)
        onnx.checker.check_model(converted, full_check=True)  # the converter can emit invalid attributes
    except Exception as exc:  # the C++ converter raises RuntimeError/ValidationError with long texts
        detail = (str(exc).splitlines() or [type(exc).__name__])[-1][:160]
        raise OnnxModelError(
            f"export.opset {opset}: onnx cannot convert this model's graph from opset {onnx_opset(proto)} "
            f"({detail}); opsets {EXPORTER_OPSET}-{MAX_OPSET} work for every model, {MIN_OPSET}-"
            f"{EXPORTER_OPSET - 1} only where onnx's version converter handles the graph"
        ) from None
    if onnx_opset(converted) != opset:
        raise OnnxModelError(f"{target}: export.opset {opset}: conversion gave opset {onnx_opset(converted)}")
    return converted


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
    output ``"logits"``, and exactly the opset asked for: the exporter writes opset
    :data:`EXPORTER_OPSET` or above natively, a lower one (down to :data:`MIN_OPSET`) is converted
    with ``onnx.version_converter``. ``metadata`` is stored in the model's ``metadata_props`` (the
    pipeline records algorithm, granularity and claimed sparsity there for the gate's audit).
    The exporter's external-data file is written in a temporary folder and removed; the ONNX file
    holds its weights.

    :raises OnnxModelError: when the model still carries masks (strip it first), the export or the
        opset conversion fails, or the full ``onnx.checker`` check fails.
    :raises ArgumentError: for a model that is not an ``nn.Module``, an example that is not an image
        batch tensor, or an opset outside the supported range.
    """
    if not isinstance(model, nn.Module):
        raise ArgumentError(f"export_onnx: model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(example_input, torch.Tensor) or example_input.dim() != 4 or len(example_input) == 0:
        shape = list(example_input.shape) if isinstance(example_input, torch.Tensor) else type(example_input).__name__
        raise ArgumentError(f"export_onnx: example_input must be an image batch N x C x H x W, got {shape}")
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise ArgumentError(f"export_onnx: opset {opset!r} is outside the supported {MIN_OPSET}-{MAX_OPSET}")
    if has_masks(model):
        raise OnnxModelError("export_onnx: the model still carries masks; export PruningResult.strip()")
    target = Path(path)
    model = model.eval().cpu()
    example = example_input[:1].detach().cpu().float()
    # A tuple matches the forward's inputs by position, whatever its argument is called (x, input, ...).
    dynamic = ({0: torch.export.Dim("batch", min=1, max=65536)},) if dynamic_batch else None
    with (
        atomic_path(target) as tmp,
        warnings.catch_warnings(),
        tempfile.TemporaryDirectory(prefix="robprune-export-") as raw,
    ):
        warnings.simplefilter("ignore")
        exported = Path(raw) / "model.onnx"  # the exporter puts model.onnx.data beside it
        try:
            torch.onnx.export(
                model,
                (example,),
                str(exported),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                opset_version=max(opset, EXPORTER_OPSET),
                dynamo=True,
                dynamic_shapes=dynamic,
                verbose=False,
            )
        except Exception as exc:  # the exporter raises many types; report one line
            problem = storage_problem(exc)
            if problem is not None:
                raise OutputError(f"{target}: cannot be written ({problem})") from None
            raise OnnxModelError(
                f"{target}: ONNX export failed ({type(exc).__name__}: {str(exc).splitlines()[0]})"
            ) from exc
        proto = _to_opset(onnx.load(str(exported)), opset, target)
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
