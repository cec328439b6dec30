"""ONNX export of stripped models and an audit of what the graph really contains."""

from robprune_deploy.export.audit import OnnxAudit, audit_onnx, torch_weight_params
from robprune_deploy.export.onnx_export import INPUT_NAME, OUTPUT_NAME, export_onnx, load_onnx

__all__ = ["INPUT_NAME", "OUTPUT_NAME", "OnnxAudit", "audit_onnx", "export_onnx", "load_onnx", "torch_weight_params"]
