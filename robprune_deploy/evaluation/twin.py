"""A differentiable torch twin of an ONNX graph, for white-box attacks on any ONNX file.

The gate must attack the very model it releases. When it is handed only an ONNX file (or an
MLflow model URI), PGD is crafted on a torch module converted from that graph by onnx2torch and
the twin's parity with onnxruntime is checked before it is trusted.
"""

from __future__ import annotations

import onnx
from onnx import numpy_helper
from torch import nn

from robprune_deploy.errors import OnnxModelError


def _relax_reshape(proto: onnx.ModelProto) -> onnx.ModelProto:
    """``allowzero=1`` only differs from 0 when the target shape holds a 0; onnx2torch supports only 0."""
    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    constants = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type == "Constant":
            for attribute in node.attribute:
                if attribute.name == "value":
                    constants[node.output[0]] = numpy_helper.to_array(attribute.t)
    for node in proto.graph.node:
        if node.op_type != "Reshape":
            continue
        for attribute in node.attribute:
            if attribute.name == "allowzero" and attribute.i == 1:
                shape = constants.get(node.input[1])
                if shape is None or (shape == 0).any():
                    raise OnnxModelError(f"Reshape {node.name!r}: a zero-sized target shape has no torch twin")
                attribute.i = 0
    return proto


def torch_twin(proto: onnx.ModelProto) -> nn.Module:
    """An eval-mode torch module computing the same function as ``proto``.

    :raises OnnxModelError: when the graph uses an operator onnx2torch cannot convert.
    """
    from onnx2torch import convert

    try:
        return convert(_relax_reshape(proto)).eval()
    except (NotImplementedError, KeyError, ValueError) as exc:
        raise OnnxModelError(f"cannot build a torch twin of the ONNX graph for white-box attacks ({exc})") from None
