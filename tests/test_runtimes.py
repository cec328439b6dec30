"""A runtime is one class registered in RUNTIMES: registered here, in the test module, through the
public registry, a third runtime gets the evaluation, the checks and a gate row, and a model that
passes on one runtime but fails on another fails the release, naming the runtime."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from runtime_tools import GATE, exported  # type: ignore[import-not-found]

import robprune_deploy as rp
from robprune_deploy.attacks import ThreatModel
from robprune_deploy.evaluation import RUNTIMES, Artifact, EvaluationProtocol, Predictor, Runtime, evaluate_artifact
from robprune_deploy.evaluation.twin import torch_twin
from robprune_deploy.export import load_onnx

THREAT = ThreatModel(0.2, 0.07, 3)


class TwinPredictor:
    """Serves an ONNX file with torch: the graph converted by onnx2torch, optionally with a skew
    added to class 0's logit (a runtime that computes something else)."""

    provider = "cpu"

    def __init__(self, file: Path, skew: float = 0.0) -> None:
        self.model, self.skew = torch_twin(load_onnx(file)).eval(), skew

    def predict(self, x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            logits = self.model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()
        logits[:, 0] += self.skew
        return logits


@RUNTIMES.register("torch-test")
class TorchRuntime(Runtime):
    def open(self, file: Path, providers: Sequence[str] = ("cpu",), threads: int = 0) -> Predictor:
        return TwinPredictor(file)


@RUNTIMES.register("skewed-test")
class SkewedRuntime(Runtime):
    def open(self, file: Path, providers: Sequence[str] = ("cpu",), threads: int = 0) -> Predictor:
        return TwinPredictor(file, skew=100.0)


@pytest.fixture()
def files(robust_cnn, digits, tmp_path) -> tuple[Path, Path]:
    return exported(robust_cnn, digits.test.tensors[0][:1], tmp_path / "models")


def test_a_runtime_registered_in_a_test_module_is_evaluated_like_onnxruntime(robust_cnn, digits, files) -> None:
    assert {"onnxruntime", "openvino", "torch-test"} <= set(RUNTIMES.names())
    batches = [(digits.test.tensors[0][:90], digits.test.tensors[1][:90])]
    protocol = EvaluationProtocol(THREAT, square_queries=20, square_examples=30, seed=3)
    figures = {
        name: evaluate_artifact(
            Artifact.of(files[0], runtime=name, providers=["cpu"]), protocol, batches, twins={"twin": robust_cnn}
        )
        for name in ("onnxruntime", "torch-test")
    }
    ours, ort = figures["torch-test"], figures["onnxruntime"]
    assert (ours.runtime, ours.precision, ours.provider, ours.examples) == ("torch-test", "fp32", "cpu", 90)
    # The same PGD points (same twin, same seed) classified by two runtimes computing the same function.
    assert ours.pgd_acc == ort.pgd_acc and 0 < ours.pgd_acc < ours.clean_acc == ort.clean_acc
    assert ours.max_abs_diff is not None and ours.max_abs_diff < 1e-4 and ours.argmax_agreement == 1.0
    # Square queries each runtime itself: the same random search on the same logits, up to one example.
    assert ours.square_examples == 30 and ours.square_acc is not None and ort.square_acc is not None
    assert abs(ours.square_acc - ort.square_acc) <= 1 / 30


def test_the_gate_checks_every_runtime_and_fails_the_release_naming_the_one_that_fails(files, tmp_path) -> None:
    model, dense = files
    both = rp.gate_onnx(
        model, baseline=dense, overrides=[*GATE, "evaluate.runtimes=[onnxruntime,torch-test]"],
        report=tmp_path / "both", show_progress=False,
    )  # fmt: skip
    assert both.passed, both.failures
    assert list(both.per_runtime) == ["onnxruntime", "torch-test"]
    names = {c.name for c in both.checks}
    assert {"onnxruntime.min_clean_acc", "torch-test.min_clean_acc", "torch-test.max_pgd_drop"} <= names
    assert {"torch-test.batch_consistency", "torch-test.baseline_batch_consistency"} <= names
    ours = both.per_runtime["torch-test"]
    assert ours.candidate.clean_acc == both.per_runtime["onnxruntime"].candidate.clean_acc >= 0.5
    assert ours.candidate.speedup is not None and ours.baseline is not None and ours.baseline.latency_ms
    report = json.loads((tmp_path / "both" / "gate.json").read_text())
    assert report["passed"] and set(report["runtimes"]) == {"onnxruntime", "torch-test"}
    assert report["runtimes"]["torch-test"]["runtime"] == "torch-test"
    markdown = (tmp_path / "both" / "gate.md").read_text()
    assert "| check | threshold | onnxruntime | torch-test |" in markdown
    assert "| candidate (torch-test) |" in markdown and "Passed on every runtime." in markdown

    skewed = rp.gate_onnx(
        model, baseline=dense, overrides=[*GATE, "evaluate.runtimes=[onnxruntime,skewed-test]"],
        report=tmp_path / "skewed", show_progress=False,
    )  # fmt: skip
    assert not skewed.passed and skewed.per_runtime["onnxruntime"].passed
    assert skewed.failures and all(name.startswith("skewed-test.") for name in skewed.failures)
    assert "skewed-test.min_clean_acc" in skewed.failures
    assert "Failed on: skewed-test (min_clean_acc" in (tmp_path / "skewed" / "gate.md").read_text()


def test_an_unregistered_or_repeated_runtime_is_one_error_naming_the_field(files, capsys) -> None:
    from clitools import RECIPES, cli, one_error, sets  # type: ignore[import-not-found]

    def gate(runtimes: str) -> tuple[int, list[str]]:
        report = files[0].parent / "r"
        recipe = RECIPES / "digits_hydra.yaml"
        return cli(capsys, "gate", files[0], "--recipe", recipe, "--report", report, *sets(*GATE, runtimes))

    code, err = gate("evaluate.runtimes=[onnxruntime,tensorrt-x]")
    assert code == 2
    one_error(err, "evaluate.runtimes[1]", "unknown runtime 'tensorrt-x'", "openvino")
    code, err = gate("evaluate.runtimes=[openvino,openvino]")
    assert code == 2
    one_error(err, "evaluate.runtimes", "'openvino' is listed twice")
