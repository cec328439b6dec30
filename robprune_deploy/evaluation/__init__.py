"""Robustness, parity and latency of deployable artifacts under their runtimes (onnxruntime, OpenVINO)."""

from robprune_deploy.evaluation.latency import LatencyStats, Speedup, compare_latency, compare_speed, measure_latency
from robprune_deploy.evaluation.parity import Parity, parity
from robprune_deploy.evaluation.protocol import EvaluationProtocol
from robprune_deploy.evaluation.robustness import (
    OnnxRobustness,
    Robustness,
    evaluate_artifact,
    evaluate_onnx,
    pgd_outcomes,
)
from robprune_deploy.evaluation.runtimes import RUNTIMES, Artifact, Predictor, Runtime
from robprune_deploy.evaluation.sessions import PROVIDERS, OnnxClassifier, create_session
from robprune_deploy.evaluation.square import SquareResult, square_attack

__all__ = [
    "PROVIDERS",
    "RUNTIMES",
    "Artifact",
    "EvaluationProtocol",
    "LatencyStats",
    "OnnxClassifier",
    "OnnxRobustness",
    "Parity",
    "Predictor",
    "Robustness",
    "Runtime",
    "Speedup",
    "SquareResult",
    "compare_latency",
    "compare_speed",
    "create_session",
    "evaluate_artifact",
    "evaluate_onnx",
    "measure_latency",
    "parity",
    "pgd_outcomes",
    "square_attack",
]
