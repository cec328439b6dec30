"""Parameters and MACs read from the ONNX graph itself: the proof that pruned channels are gone.

The exporter folds BatchNorm into the preceding convolution, so the audit counts the weights of
Conv and Gemm/MatMul nodes (not biases, whose number folding changes) and their MACs from the
inferred output shapes; :func:`torch_weight_params` is the same count on the torch side.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper, shape_inference
from torch import nn


@dataclass(frozen=True)
class OnnxAudit:
    """What the graph contains, for one input sample (batch 1)."""

    weight_params: int
    nonzero_weight_params: int
    macs: int
    conv_out_channels: dict[str, int] = field(default_factory=dict)

    @property
    def zero_fraction(self) -> float:
        return 1.0 - self.nonzero_weight_params / self.weight_params if self.weight_params else 0.0


def torch_weight_params(model: nn.Module) -> int:
    """Weight entries of every Conv2d and Linear layer (the audit's torch-side count)."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))


def _static_batch(proto: onnx.ModelProto) -> onnx.ModelProto:
    """``proto`` at batch 1 with every intermediate shape inferred anew.

    The exporter's own ``value_info`` keeps the symbolic batch, which shape inference would not
    overwrite; a MatMul on a ``[batch, tokens, width]`` activation (every transformer layer) would
    then count one row instead of ``tokens``. Data propagation resolves the ``Reshape`` targets that
    the graph computes from ``Shape``.
    """
    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    for value in list(proto.graph.input) + list(proto.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].ClearField("dim_param")
            dims[0].dim_value = 1
    del proto.graph.value_info[:]
    return shape_inference.infer_shapes(proto, data_prop=True)


def audit_onnx(proto: onnx.ModelProto) -> OnnxAudit:
    """Count Conv/Gemm/MatMul weights and MACs of ``proto`` at batch 1."""
    proto = _static_batch(proto)
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    shapes: dict[str, list[int]] = {}
    for value in list(proto.graph.value_info) + list(proto.graph.output):
        shapes[value.name] = [d.dim_value for d in value.type.tensor_type.shape.dim]
    params = nonzero = macs = 0
    channels: dict[str, int] = {}
    for node in proto.graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul"):
            continue
        weight = next((inits[name] for name in node.input[1:2] if name in inits), None)
        if weight is None:
            continue
        params += weight.size
        nonzero += int(np.count_nonzero(weight))
        out_shape = shapes.get(node.output[0], [])
        if node.op_type == "Conv":
            positions = int(np.prod(out_shape[2:])) if len(out_shape) > 2 else 1
            macs += weight.size * positions
            channels[node.name or node.output[0]] = int(weight.shape[0])
        else:
            rows = int(np.prod(out_shape[:-1])) if len(out_shape) > 1 else 1
            macs += weight.size * max(rows, 1)
    return OnnxAudit(params, nonzero, macs, channels)
