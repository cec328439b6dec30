"""INT8 post-training quantization of an exported ONNX model with ``nncf.quantize`` (ONNX backend).

The ONNX backend quantizes the very file that was exported, audited and gated in FP32: the INT8
model differs from it only by the QuantizeLinear/DequantizeLinear pairs NNCF inserts, so the
pruned channel counts and the graph interface are those of the FP32 file by construction.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from robprune_deploy.atomic import atomic_path
from robprune_deploy.errors import ArgumentError, QuantizationError
from robprune_deploy.export import load_onnx

log = logging.getLogger(__name__)

PRESETS = ("performance", "mixed")
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
PRECISION_KEY = "robprune.precision"
INTEGER_TYPES = (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)


def initializer_types(proto: onnx.ModelProto) -> Counter[str]:
    """Initializers per data type name (``INT8``, ``FLOAT``, ...), counted from the graph."""
    return Counter(onnx.TensorProto.DataType.Name(i.data_type) for i in proto.graph.initializer)


def is_int8(proto: onnx.ModelProto) -> bool:
    """Whether ``proto`` is a quantized (QDQ) graph: it quantizes activations and holds integer weights."""
    ops = {n.op_type for n in proto.graph.node}
    integer_weights = any(i.data_type in INTEGER_TYPES for i in proto.graph.initializer)
    return "QuantizeLinear" in ops and "DequantizeLinear" in ops and integer_weights


def calibration_inputs(batches: Sequence[Any], size: int, field: str = "quantize.calibration_size") -> np.ndarray:
    """The first ``size`` inputs of ``batches`` (tensors or arrays, or ``(x, y)`` pairs) as one array.

    :raises QuantizationError: for a non-positive size or one larger than the data.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise QuantizationError(f"{field}: must be a positive number of examples, got {size!r}")
    arrays = [np.asarray(b[0] if isinstance(b, (tuple, list)) else b, dtype=np.float32) for b in batches]
    available = sum(len(a) for a in arrays)
    if size > available:
        raise QuantizationError(f"{field}: {size} calibration examples asked for, the data holds {available}")
    return np.concatenate(arrays)[:size] if arrays else np.zeros((0,), dtype=np.float32)


def quantize_onnx(
    source: str | os.PathLike[str],
    target: str | os.PathLike[str],
    calibration: np.ndarray,
    *,
    preset: str = "performance",
    ignored_scope: Any = None,
    fast_bias_correction: bool = True,
    batch_size: int = 32,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write the INT8 (QDQ) model of the FP32 ONNX file ``source`` to ``target`` (atomically).

    :param calibration: the calibration inputs (N x C x H x W in [0, 1]); all of them are used.
    :param preset: ``performance`` (symmetric) or ``mixed`` (asymmetric activations).
    :param ignored_scope: an :class:`nncf.IgnoredScope` of ONNX node names, patterns or types kept in FP32.
    :param metadata: extra ``metadata_props``; those of ``source`` are kept, with
        ``robprune.precision=int8`` added.
    :raises QuantizationError: when ``source`` is missing; :raises OnnxModelError: when it is corrupted.
    """
    import nncf

    source, target = Path(source), Path(target)
    if not source.is_file():
        raise QuantizationError(f"{source}: no exported FP32 model to quantize; run `robprune export` first")
    if preset not in PRESETS:
        raise ArgumentError(f"quantize_onnx: preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    if calibration.ndim != 4 or not len(calibration):
        raise ArgumentError(
            f"quantize_onnx: calibration must be a non-empty N x C x H x W array, got {calibration.shape}"
        )
    proto = load_onnx(source)
    name = proto.graph.input[0].name
    batches = [calibration[i : i + batch_size] for i in range(0, len(calibration), batch_size)]
    dataset = nncf.Dataset(batches, lambda x: {name: x})
    try:
        quantized = nncf.quantize(
            proto,
            dataset,
            preset=nncf.QuantizationPreset(preset),
            subset_size=len(batches),  # NNCF counts dataset items, here batches: every example is used
            fast_bias_correction=fast_bias_correction,
            ignored_scope=ignored_scope,
        )
    except nncf.ValidationError as exc:  # an ignored scope naming no node, ...
        detail = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise QuantizationError(f"quantize.ignored_scope: {detail}") from None
    meta = {p.key: p.value for p in proto.metadata_props}
    meta.update(metadata or {})
    meta[PRECISION_KEY] = "int8"
    del quantized.metadata_props[:]
    for key, value in meta.items():
        entry = quantized.metadata_props.add()
        entry.key, entry.value = key, str(value)
    onnx.checker.check_model(quantized, full_check=True)
    with atomic_path(target) as tmp:
        onnx.save(quantized, str(tmp))
    log.info("quantized %s -> %s (%s)", source, target, dict(initializer_types(quantized)))
    return target
