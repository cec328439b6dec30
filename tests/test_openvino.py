"""OpenVINO, the second runtime: it serves the exported ONNX file (FP32 and the INT8 QDQ model) with
the thread policy, agrees with onnxruntime on the digits model's logits, and the gate reports both."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from runtime_tools import GATE, exported  # type: ignore[import-not-found]

import robprune_deploy as rp
from robprune_deploy.environment.diagnosis import runtime_devices
from robprune_deploy.evaluation import Artifact
from robprune_deploy.quantization import quantize_onnx
from robprune_deploy.runtime import current_thread_choice, ensure_thread_policy


@pytest.fixture()
def files(robust_cnn, digits, tmp_path) -> tuple[Path, Path, Path]:
    """``model.onnx``, ``dense.onnx`` and ``model.int8.onnx`` of the digits CNN."""
    model, dense = exported(robust_cnn, digits.test.tensors[0][:1], tmp_path / "models")
    int8 = quantize_onnx(model, model.with_name("model.int8.onnx"), digits.train.tensors[0][:128].numpy())
    return model, dense, int8


def logits(file: Path, runtime: str, x: np.ndarray, precision: str = "fp32") -> np.ndarray:
    return Artifact.of(file, precision, runtime, ["cpu"]).open().predict(x)


def test_openvino_and_onnxruntime_agree_on_the_digits_model(digits, files) -> None:
    model, _, int8 = files
    x = digits.test.tensors[0].numpy()  # the whole digits test split
    ort, ov = logits(model, "onnxruntime", x), logits(model, "openvino", x)
    assert ov.shape == ort.shape == (len(x), 10)
    assert float(np.abs(ov - ort).max()) < 1e-4  # FP32 arithmetic on both (OpenVINO's bf16 hint is off)
    assert (ov.argmax(1) == ort.argmax(1)).all()
    # The INT8 QDQ graph: OpenVINO's INT8 kernels against onnxruntime's, rounding may differ by a step.
    ort8, ov8 = logits(int8, "onnxruntime", x, "int8"), logits(int8, "openvino", x, "int8")
    assert (ov8.argmax(1) == ort8.argmax(1)).mean() >= 0.98
    assert float(np.abs(ov8 - ort8).max()) < 0.5 * float(np.abs(ort8).max())


def test_openvino_takes_its_threads_from_the_policy_and_doctor_lists_its_devices(files) -> None:
    ensure_thread_policy()
    choice = current_thread_choice()
    assert choice is not None
    policy = Artifact.of(files[0], runtime="openvino", providers=["cpu"]).open()
    assert int(policy.compiled.get_property("INFERENCE_NUM_THREADS")) == choice.threads  # type: ignore[attr-defined]
    one = Artifact.of(files[0], runtime="openvino", providers=["cpu"]).open(threads=1)
    assert int(one.compiled.get_property("INFERENCE_NUM_THREADS")) == 1  # type: ignore[attr-defined]
    devices = runtime_devices()
    assert devices["openvino"] and devices["openvino"][0].startswith("CPU: ")
    assert "cpu" in devices["onnxruntime"]


def test_the_gate_measures_and_reports_both_runtimes_for_fp32_and_int8(files, tmp_path) -> None:
    model, dense, int8 = files
    runtimes = "evaluate.runtimes=[onnxruntime,openvino]"
    overrides = [*GATE, runtimes]
    fp32 = rp.gate_onnx(model, baseline=dense, overrides=overrides, report=tmp_path / "fp32", show_progress=False)
    assert fp32.passed, fp32.failures
    ort, ov = fp32.per_runtime["onnxruntime"], fp32.per_runtime["openvino"]
    assert ov.provider == "cpu" and ov.robustness["candidate"].runtime == "openvino"
    assert ov.candidate.clean_acc == ort.candidate.clean_acc
    assert abs(ov.candidate.pgd_acc - ort.candidate.pgd_acc) <= 1 / 60  # one example at most
    assert ov.candidate.max_abs_diff is not None and ov.candidate.max_abs_diff < 1e-3
    report = json.loads((tmp_path / "fp32" / "gate.json").read_text())
    assert set(report["runtimes"]) == {"onnxruntime", "openvino"}
    assert {"onnxruntime.min_clean_acc", "openvino.min_clean_acc", "openvino.max_parity_error"} <= {
        c["name"] for c in report["checks"]
    }
    assert "| check | threshold | onnxruntime | openvino |" in (tmp_path / "fp32" / "gate.md").read_text()

    # The INT8 model on both runtimes, against its FP32 model (model.onnx beside it) on each.
    quantized = rp.gate_onnx(
        int8, precision="int8", overrides=[*GATE, runtimes, "gate.int8.max_clean_drop=0.1"],
        report=tmp_path / "int8", show_progress=False,
    )  # fmt: skip
    for runtime, verdict in quantized.per_runtime.items():
        checks = {c.name: c for c in verdict.checks}
        assert checks["int8.min_agreement"].measured is not None and checks["int8.min_agreement"].measured >= 0.9
        figures = verdict.details["int8"]
        assert figures["runtime"] == runtime and set(figures["pgd_sources"]) == {"ste", "transfer"}
        assert figures["pgd_acc"] <= min(figures["pgd_sources"].values())
    assert {f"{r}.int8.min_agreement" for r in ("onnxruntime", "openvino")} <= {c.name for c in quantized.checks}


def test_a_run_evaluates_and_gates_fp32_and_int8_on_both_runtimes(robust_cnn_state, tmp_path) -> None:
    import torch
    from conftest import FAST_RUN, LIGHT_EVAL, overrides  # type: ignore[import-not-found]

    from robprune_deploy.cli.main import main

    checkpoint = tmp_path / "robust_cnn.pt"  # the suite's adversarially trained CNN: no pretraining here
    torch.save(robust_cnn_state, checkpoint)
    out = tmp_path / "run"
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "digits_hydra.yaml"
    fast = [item for item in FAST_RUN if not item.startswith("compression.config.")]  # HYDRA's options
    sets = (
        *fast, *LIGHT_EVAL, f"model.checkpoint={checkpoint}", "compression.algorithm=l1_filter",
        "compression.ratio=0.5", "finetune.epochs=0", "evaluate.num_examples=100", "evaluate.attacks=pgd",
        "evaluate.indicator_examples=0", "evaluate.runtimes=[onnxruntime,openvino]", "tracking.enabled=false",
        "quantize.enabled=true", "quantize.calibration_size=100", "gate.indicators=[]",
    )  # fmt: skip
    assert main(["run", str(recipe), "--out", str(out), "--quiet", *overrides(*sets)]) in (0, 1)  # passed or failed
    summary = json.loads((out / "summary.json").read_text())
    for prefix in ("", "openvino."):  # the first runtime's keys as before, the other's prefixed by its name
        assert 0 <= summary[f"{prefix}onnx.pgd_acc"] <= summary[f"{prefix}onnx.clean_acc"]
        assert summary[f"{prefix}onnx.provider"] == "cpu" and summary[f"{prefix}latency.speedup"] > 0
        assert summary[f"{prefix}int8.pgd_acc"] <= summary[f"{prefix}int8.transfer_pgd_acc"]
        assert summary[f"{prefix}int8.agreement"] >= 0.9 and summary[f"{prefix}int8.latency.speedup_vs_pruned"] > 0
    assert abs(summary["openvino.onnx.clean_acc"] - summary["onnx.clean_acc"]) <= 1 / 100
    for folder in (out, out / "gate_int8"):
        verdict = json.loads((folder / "gate.json").read_text())
        assert set(verdict["runtimes"]) == {"onnxruntime", "openvino"}
        assert verdict["passed"] == all(v["passed"] for v in verdict["runtimes"].values())
        assert all(name.split(".")[0] in ("onnxruntime", "openvino") for name in verdict["failures"])
    assert summary["gate.failures"] == json.loads((out / "gate.json").read_text())["failures"]
