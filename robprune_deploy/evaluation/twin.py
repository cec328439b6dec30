"""A differentiable torch twin of an ONNX graph, for white-box attacks on any ONNX file.

The gate must attack the very model it releases. When it is handed only an ONNX file (or an
MLflow model URI), PGD is crafted on a torch module converted from that graph by onnx2torch and
the twin's parity with onnxruntime is checked before it is trusted.
"""

from __future__ import annotations

import contextlib
from typing import Any

import onnx
from onnx import numpy_helper
from torch import nn

from robprune_deploy.errors import OnnxModelError
from robprune_deploy.quantization.fake_quant import fold_weight_dequantize, register_qdq_converters


def _relax_reshape(proto: onnx.ModelProto, source: str) -> onnx.ModelProto:
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
                    raise OnnxModelError(
                        f"{source}: Reshape {node.name!r}: a zero-sized target shape has no torch twin"
                    )
                attribute.i = 0
    return proto


_REDUCTIONS = ("ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceSumSquare")
_registered = False


def _register_opset18_reductions() -> None:
    """Opset 18 moved the reduction ``axes`` from an attribute to an input; onnx2torch 1.5 converts
    only the attribute form. Register converters that read a constant ``axes`` input."""
    global _registered
    if _registered:
        return
    _registered = True
    import torch
    from onnx2torch.node_converters.reduce import OnnxReduceStaticAxes
    from onnx2torch.node_converters.registry import add_converter
    from onnx2torch.utils.common import OnnxMapping, OperationConverterResult, get_const_value

    def convert(node: Any, graph: Any) -> Any:
        axes = None
        if len(node.input_values) > 1 and node.input_values[1]:
            value = get_const_value(node.input_values[1], graph)
            axes = value.tolist() if isinstance(value, torch.Tensor) else list(value)
        module = OnnxReduceStaticAxes(
            operation_type=node.operation_type, axes=axes, keepdims=node.attributes.get("keepdims", 1)
        )
        mapping = OnnxMapping(inputs=(node.input_values[0],), outputs=node.output_values)
        return OperationConverterResult(torch_module=module, onnx_mapping=mapping)

    for operation in _REDUCTIONS:
        with contextlib.suppress(ValueError):  # a newer onnx2torch supports it already
            add_converter(operation_type=operation, version=18)(convert)


_resize_registered = False


def _register_opset18_resize() -> None:
    """Opset 18 added ``antialias``, ``axes`` and ``keep_aspect_ratio_policy`` to Resize; onnx2torch 1.5
    converts only up to opset 13. With those at their defaults the operator is opset 13's, so its
    converter is reused (MobileViT resizes feature maps that its patch size does not divide)."""
    global _resize_registered
    if _resize_registered:
        return
    _resize_registered = True
    from onnx2torch.node_converters.registry import add_converter, get_converter

    opset13 = get_converter("Resize", 13)

    def convert(node: Any, graph: Any) -> Any:
        attributes = node.attributes
        if attributes.get("antialias", 0) or "axes" in attributes:
            raise NotImplementedError("Resize with antialias or axes has no torch twin")
        if attributes.get("keep_aspect_ratio_policy", "stretch") != "stretch":
            raise NotImplementedError("Resize with keep_aspect_ratio_policy other than stretch has no torch twin")
        return opset13(node, graph)

    for version in (18, 19):
        with contextlib.suppress(ValueError):  # a newer onnx2torch supports it already
            add_converter(operation_type="Resize", version=version)(convert)


def torch_twin(proto: onnx.ModelProto, source: str = "the ONNX graph") -> nn.Module:
    """An eval-mode torch module computing the same function as ``proto``.

    An INT8 (QDQ) graph gets a straight-through twin: its weights dequantized, its activation
    quantizers rounding with an identity gradient (:mod:`robprune_deploy.quantization.fake_quant`).

    :param source: what the graph is, for the error message: its role and file, e.g.
        ``"candidate runs/x/model.onnx"`` (the gate converts a candidate and a baseline).
    :raises OnnxModelError: naming ``source``, when onnx2torch cannot convert the graph.
    """
    from onnx2torch import convert

    _register_opset18_reductions()
    _register_opset18_resize()
    register_qdq_converters()
    if any(node.op_type == "DequantizeLinear" for node in proto.graph.node):
        proto = fold_weight_dequantize(proto)
    relaxed = _relax_reshape(proto, source)
    try:
        return convert(relaxed).eval()
    # onnx2torch reports an operator or attribute it cannot convert in any of these
    except (NotImplementedError, KeyError, ValueError, TypeError, IndexError) as exc:
        detail = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise OnnxModelError(f"{source}: cannot build a torch twin for the white-box attacks ({detail})") from None
