"""INT8 deployment: post-training quantization with NNCF and the straight-through twin of a QDQ graph."""

from robprune_deploy.quantization.fake_quant import Dequantize, QuantizeSTE, register_qdq_converters
from robprune_deploy.quantization.onnx_int8 import (
    PRECISION_KEY,
    PRESETS,
    calibration_inputs,
    initializer_types,
    is_int8,
    quantize_onnx,
)

__all__ = [
    "PRECISION_KEY",
    "PRESETS",
    "Dequantize",
    "QuantizeSTE",
    "calibration_inputs",
    "initializer_types",
    "is_int8",
    "quantize_onnx",
    "register_qdq_converters",
]
