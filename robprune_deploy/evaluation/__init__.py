"""Robustness, parity and latency of ONNX models under onnxruntime."""

from robprune_deploy.evaluation.latency import LatencyStats, Speedup, compare_latency, compare_speed, measure_latency
from robprune_deploy.evaluation.parity import Parity, parity
from robprune_deploy.evaluation.robustness import OnnxRobustness, evaluate_onnx, pgd_outcomes
from robprune_deploy.evaluation.sessions import PROVIDERS, OnnxClassifier, create_session
from robprune_deploy.evaluation.square import SquareResult, square_attack

__all__ = [
    "PROVIDERS",
    "LatencyStats",
    "OnnxClassifier",
    "OnnxRobustness",
    "Parity",
    "Speedup",
    "SquareResult",
    "compare_latency",
    "compare_speed",
    "create_session",
    "evaluate_onnx",
    "measure_latency",
    "parity",
    "pgd_outcomes",
    "square_attack",
]
