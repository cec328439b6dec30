"""Straight-through torch modules for ONNX ``QuantizeLinear`` / ``DequantizeLinear`` nodes.

The differentiable twin of an INT8 graph must compute what onnxruntime computes (the rounding, the
saturation) and still pass gradients, or a white-box attack on it fails for the wrong reason (its
gradient is zero almost everywhere: the classic gradient masking of quantized models). Rounding is
taken with the straight-through estimator (identity gradient); saturation keeps its true gradient
(zero outside the integer range), as in quantization-aware training.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

_RANGES = {torch.int8: (-128, 127), torch.uint8: (0, 255), torch.int16: (-32768, 32767), torch.uint16: (0, 65535)}


def _broadcast(value: torch.Tensor, axis: int, ndim: int) -> torch.Tensor:
    """A per-channel ``value`` shaped to broadcast along ``axis`` of an ``ndim``-d tensor."""
    if value.ndim == 0 or ndim == 0:
        return value
    shape = [1] * ndim
    shape[axis % ndim] = value.numel()
    return value.reshape(shape)


class QuantizeSTE(nn.Module):
    """``saturate(round(x / scale) + zero_point)`` as floats, with a straight-through rounding."""

    scale: torch.Tensor
    zero_point: torch.Tensor

    def __init__(self, scale: torch.Tensor, zero_point: torch.Tensor, axis: int) -> None:
        super().__init__()
        low, high = _RANGES.get(zero_point.dtype, (-128, 127))
        self.low, self.high, self.axis = float(low), float(high), axis
        self.register_buffer("scale", scale.float())
        self.register_buffer("zero_point", zero_point.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scaled = x / _broadcast(self.scale, self.axis, x.ndim)
        rounded = scaled + (torch.round(scaled) - scaled).detach()  # ONNX and torch both round half to even
        return torch.clamp(rounded + _broadcast(self.zero_point, self.axis, x.ndim), self.low, self.high)


class Dequantize(nn.Module):
    """``(q - zero_point) * scale`` for integer weights (initializers) and fake-quantized activations."""

    scale: torch.Tensor
    zero_point: torch.Tensor

    def __init__(self, scale: torch.Tensor, zero_point: torch.Tensor, axis: int) -> None:
        super().__init__()
        self.axis = axis
        self.register_buffer("scale", scale.float())
        self.register_buffer("zero_point", zero_point.float())

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        q = q.float()
        return (q - _broadcast(self.zero_point, self.axis, q.ndim)) * _broadcast(self.scale, self.axis, q.ndim)


_registered = False


def register_qdq_converters() -> None:
    """Teach onnx2torch (1.5 has no converter for them) the QDQ pair, with straight-through rounding."""
    global _registered
    if _registered:
        return
    _registered = True
    from onnx2torch.node_converters.registry import add_converter
    from onnx2torch.utils.common import OnnxMapping, OperationConverterResult, get_const_value

    def converter(module_type: type[nn.Module]) -> Any:
        def convert(node: Any, graph: Any) -> Any:
            if node.attributes.get("block_size", 0):
                raise NotImplementedError(f"{node.operation_type} with block_size has no torch twin")
            scale = torch.as_tensor(get_const_value(node.input_values[1], graph))
            if len(node.input_values) > 2 and node.input_values[2]:
                zero_point = torch.as_tensor(get_const_value(node.input_values[2], graph))
            else:
                zero_point = torch.zeros((), dtype=torch.uint8)
            module = module_type(scale, zero_point, int(node.attributes.get("axis", 1)))
            mapping = OnnxMapping(inputs=(node.input_values[0],), outputs=node.output_values)
            return OperationConverterResult(torch_module=module, onnx_mapping=mapping)

        return convert

    for operation, module_type in (("QuantizeLinear", QuantizeSTE), ("DequantizeLinear", Dequantize)):
        for version in (10, 13, 19, 21):
            with contextlib.suppress(ValueError):  # a newer onnx2torch supports it already
                add_converter(operation_type=operation, version=version)(converter(module_type))


def fold_weight_dequantize(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``proto`` whose ``DequantizeLinear`` nodes of constant (weight) inputs are replaced by
    the float initializers they compute: onnx2torch reads Conv/Gemm weights from initializers, and a
    weight is no attack input, so nothing needs a gradient through its quantization."""
    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    graph = proto.graph
    inits = {i.name: i for i in graph.initializer}
    kept = []
    for node in graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] not in inits:
            kept.append(node)
            continue
        q = numpy_helper.to_array(inits[node.input[0]]).astype(np.float64)
        scale = numpy_helper.to_array(inits[node.input[1]]).astype(np.float64)
        zp = (
            numpy_helper.to_array(inits[node.input[2]]).astype(np.float64)
            if len(node.input) > 2 and node.input[2]
            else np.zeros_like(scale)
        )
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        if scale.ndim:
            shape = [1] * q.ndim
            shape[axis % q.ndim] = scale.size
            scale, zp = scale.reshape(shape), zp.reshape(shape)
        weight = ((q - zp) * scale).astype(np.float32)
        graph.initializer.append(numpy_helper.from_array(weight, node.output[0]))
    del graph.node[:]
    graph.node.extend(kept)
    used = {name for node in graph.node for name in node.input}
    survivors = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(survivors)
    return proto
