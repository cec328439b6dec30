"""INT8 deployment: nncf.quantize of the exported model, its robustness, and the gate on INT8 models."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from conftest import FAST_RUN, overrides  # type: ignore[import-not-found]

from robprune_deploy import ALGORITHMS, PruningContext, ThreatModel
from robprune_deploy.cli.main import main
from robprune_deploy.data import make_loader
from robprune_deploy.evaluation import OnnxClassifier
from robprune_deploy.export import audit_onnx, export_onnx, load_onnx
from robprune_deploy.quantization import initializer_types, is_int8, quantize_onnx
from robprune_deploy.quantization.fake_quant import fold_weight_dequantize

INT8_RUN = (*FAST_RUN, "tracking.enabled=false", "quantize.calibration_size=200")
WEIGHT_OPS = ("Conv", "Gemm", "MatMul")
RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "digits_hydra.yaml"


def quantize_command(digits_run, out: Path, *sets: str) -> int:
    return main(["quantize", str(digits_run["recipe"]), "--out", str(out), "--quiet", *overrides(*INT8_RUN, *sets)])


@pytest.fixture(scope="module")
def int8_out(digits_run, tmp_path_factory) -> Path:
    """A copy of the digits run's folder, quantized and evaluated by `robprune quantize`."""
    out = tmp_path_factory.mktemp("int8") / "out"
    shutil.copytree(digits_run["out"], out)
    code = quantize_command(digits_run, out)
    verdict = json.loads((out / "gate_int8" / "gate.json").read_text())
    assert code == (0 if verdict["passed"] else 1)  # the INT8 gate decides the exit code
    return out


def test_quantize_gates_and_reports_like_run(int8_out) -> None:
    """`robprune quantize` on a finished folder does what `run` does with quantize.enabled: the INT8
    gate's verdict in gate_int8/, the int8.* figures in summary.json and an INT8 section in report.md."""
    summary = json.loads((int8_out / "summary.json").read_text())
    verdict = json.loads((int8_out / "gate_int8" / "gate.json").read_text())
    assert summary["int8.gate.passed"] == verdict["passed"]
    assert summary["int8.gate.failures"] == verdict["failures"]
    drop = next(c for c in verdict["checks"] if c["name"] == "int8.max_pgd_drop")
    assert drop["measured"] == pytest.approx(summary["int8.pgd_drop"])
    assert "onnx.pgd_acc" in summary  # the FP32 figures are kept beside the INT8 ones
    report = (int8_out / "report.md").read_text()
    assert "INT8" in report and f"{100 * summary['int8.pgd_acc']:.1f}" in report
    # The run's FP32 gate section survives the rewrite, every check of its gate.json listed.
    fp32 = json.loads((int8_out / "gate.json").read_text())
    assert "## Gate: " in report and all(f"| {c['name']} |" in report for c in fp32["checks"])


def test_the_int8_graph_holds_int8_weights_and_qdq_nodes(int8_out) -> None:
    proto = load_onnx(int8_out / "model.int8.onnx")
    ops = [n.op_type for n in proto.graph.node]
    weighted = sum(ops.count(op) for op in WEIGHT_OPS)
    types = initializer_types(proto)
    assert types["INT8"] >= weighted > 0  # every Conv/Gemm weight is stored as INT8
    assert ops.count("QuantizeLinear") >= weighted and ops.count("DequantizeLinear") >= weighted
    assert is_int8(proto) and not is_int8(load_onnx(int8_out / "model.onnx"))
    assert "INT8" not in initializer_types(load_onnx(int8_out / "model.onnx"))
    assert {p.key: p.value for p in proto.metadata_props}["robprune.precision"] == "int8"
    assert (int8_out / "model.int8.onnx").stat().st_size < 0.5 * (int8_out / "model.onnx").stat().st_size


def test_int8_agrees_with_fp32_and_is_evaluated_under_int8_keys(digits, int8_out) -> None:
    x = digits.test.tensors[0].numpy()  # the whole digits test split, not only the evaluation subset
    int8 = OnnxClassifier(int8_out / "model.int8.onnx", ["cpu"]).predict(x).argmax(1)
    fp32 = OnnxClassifier(int8_out / "model.onnx", ["cpu"]).predict(x).argmax(1)
    assert (int8 == fp32).mean() >= 0.98
    state = json.loads((int8_out / "state.json").read_text())["stages"]
    summary = {**state["quantize"], **state["evaluate_int8"]}
    assert summary["int8.agreement"] >= 0.98 and summary["int8.int8_initializers"] > 0
    # The straight-through twin computes what onnxruntime computes (up to one rounding step).
    assert summary["int8.twin_agreement"] >= 0.98 and summary["int8.max_abs_diff"] < 0.25
    # Worst case per example: never above either white-box attack alone.
    assert summary["int8.pgd_acc"] <= min(summary["int8.ste_pgd_acc"], summary["int8.transfer_pgd_acc"])
    assert 0 < summary["int8.pgd_acc"] < summary["int8.clean_acc"]
    fp32_pgd = state["evaluate"]["onnx.pgd_acc"]
    assert summary["int8.pgd_drop"] == pytest.approx(fp32_pgd - summary["int8.pgd_acc"])
    for key in ("int8.latency.speedup_vs_dense", "int8.latency.speedup_vs_pruned_b1", "int8.square_acc"):
        assert summary[key] > 0
    # its per-example outcomes beside the FP32 model's, on the same examples: pairable example by example
    from robprune_deploy.evaluation.outcome_files import OUTCOMES_FILE, OUTCOMES_INT8_FILE, read_outcomes

    int8_outcomes, fp32_outcomes = read_outcomes(int8_out / OUTCOMES_INT8_FILE), read_outcomes(int8_out / OUTCOMES_FILE)
    assert int8_outcomes.record["precision"] == "int8" and fp32_outcomes.record["precision"] == "fp32"
    assert int8_outcomes.subset_sha256 == fp32_outcomes.subset_sha256
    assert int8_outcomes.accuracy("pgd") == summary["int8.pgd_acc"]  # the worst case over both twins
    assert int8_outcomes.accuracy("clean") == summary["int8.clean_acc"] and "autoattack" not in int8_outcomes.figures


def test_int8_of_a_channel_pruned_network_keeps_the_pruned_channel_counts(digits, robust_cnn, tmp_path) -> None:
    data = torch.utils.data.TensorDataset(*(t[:128] for t in digits.train.tensors))
    x = digits.test.tensors[0][:1]
    context = PruningContext(
        train_data=make_loader(data, 64, shuffle=False),
        epoch_loader=lambda e: make_loader(data, 64, shuffle=False),
        ratio=0.5,
        threat=ThreatModel(0.2, 0.07, 3),
        example_inputs=x,
    )
    dense_channels = audit_onnx(load_onnx(export_onnx(robust_cnn, tmp_path / "dense.onnx", x))).conv_out_channels
    algorithm = ALGORITHMS.get("l1_filter")
    stripped = algorithm(algorithm.Config()).apply(robust_cnn, context).strip()
    fp32 = export_onnx(stripped, tmp_path / "pruned.onnx", x)
    calibration = digits.train.tensors[0][:64].numpy()
    int8 = load_onnx(quantize_onnx(fp32, tmp_path / "pruned.int8.onnx", calibration))
    pruned = audit_onnx(load_onnx(fp32))
    quantized = audit_onnx(fold_weight_dequantize(int8))
    assert sorted(quantized.conv_out_channels.values()) == sorted(pruned.conv_out_channels.values())
    assert sum(pruned.conv_out_channels.values()) < sum(dense_channels.values())
    assert quantized.weight_params == pruned.weight_params
    assert initializer_types(int8)["INT8"] >= len(pruned.conv_out_channels)


@pytest.mark.parametrize(
    ("sets", "needle"),
    [
        (("quantize.calibration_size=100000",), "quantize.calibration_size: 100000 calibration images asked for"),
        (("quantize.calibration_size=0",), "quantize.calibration_size"),
        (("quantize.calibration_size=-5",), "quantize.calibration_size"),
    ],
)
def test_bad_calibration_sizes_are_one_clear_error(digits_run, tmp_path, capsys, sets, needle) -> None:
    out = tmp_path / "out"
    shutil.copytree(digits_run["out"], out)
    assert quantize_command(digits_run, out, *sets) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err
    assert not (out / "model.int8.onnx").exists()


def test_run_refuses_a_calibration_set_larger_than_the_data_before_training(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    args = ["run", str(RECIPE), "--out", str(out), "--quiet"]
    sets = overrides(*INT8_RUN, "quantize.enabled=true", "quantize.calibration_size=100000")
    assert main([*args, *sets]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "quantize.calibration_size: 100000" in err[0], err
    assert not out.exists()


def test_quantize_without_an_exported_model_is_one_clear_error(digits_run, tmp_path, capsys) -> None:
    out = tmp_path / "empty"
    assert quantize_command(digits_run, out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no exported model.onnx to quantize" in err[0], err
    assert not (out / "model.int8.onnx").exists()
    with pytest.raises(Exception, match="no exported FP32 model"):
        quantize_onnx(tmp_path / "missing.onnx", tmp_path / "x.int8.onnx", np.zeros((4, 1, 16, 16), np.float32))


GATE = (
    "tracking.enabled=false",
    "evaluate.num_examples=100",
    "evaluate.square_queries=30",
    "evaluate.square_examples=30",
    "evaluate.indicator_examples=20",
    "evaluate.apgd_steps=20",
    "evaluate.latency.repeats=3",
    "evaluate.latency.warmup=1",
    "gate.min_clean_acc=0.5",
    "gate.min_pgd_acc=0.15",
    # On 20 indicator examples one example is 0.05: the defaults (non_monotone_curve 0.03,
    # transfer_failure 0.02) would fail on any single one. One INT8 point in 20 that fools the
    # straight-through twin but not onnxruntime (rounding differs by one step) was measured.
    "gate.indicator_limits.non_monotone_curve=0.06",
    "gate.indicator_limits.transfer_failure=0.06",
)


def test_the_gate_passes_the_int8_model_and_fails_one_whose_robustness_was_destroyed(
    digits, digits_run, int8_out, tmp_path, capsys
) -> None:
    def gate(model: Path, report: Path, *declared: str) -> int:
        recipe = str(digits_run["recipe"])
        args = ["gate", str(model), "--recipe", recipe, "--report", str(report), "--quiet", *declared]
        return main([*args, *overrides(*GATE)])

    # INT8 is declared, never guessed: undeclared, the file's own metadata contradicts the default fp32.
    capsys.readouterr()
    assert gate(int8_out / "model.int8.onnx", tmp_path / "undeclared") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.int8.onnx" in err[0] and "--precision int8" in err[0], err
    assert gate(int8_out / "model.int8.onnx", tmp_path / "good", "--precision", "int8") == 0
    good = json.loads((tmp_path / "good" / "gate.json").read_text())
    assert good["precision"] == "int8" and good["baseline_model"].endswith("model.onnx")
    names = {c["name"] for c in good["checks"]}
    assert {"int8.max_pgd_drop", "int8.min_agreement", "int8.max_parity_error", "sparsity_audit"} <= names
    assert {"batch_consistency", "baseline_batch_consistency"} <= names  # served at any batch size alike
    assert good["candidate"]["clean_acc_b1"] == pytest.approx(good["candidate"]["clean_acc"])
    assert "indicator:unavailable_gradients" in names  # the gradient-masking checks apply to INT8 too
    # Calibrated on constant images at the data's mean: normalized, they are zero, every activation
    # range collapses to the biases, and the INT8 model with it.
    destroyed = tmp_path / "destroyed" / "model.int8.onnx"
    destroyed.parent.mkdir()
    shutil.copy(int8_out / "model.onnx", destroyed.parent / "model.onnx")
    quantize_onnx(int8_out / "model.onnx", destroyed, np.full((64, 1, 16, 16), digits.mean[0], np.float32))
    assert is_int8(onnx.load(str(destroyed)))
    assert gate(destroyed, tmp_path / "bad", "--precision", "int8") == 1
    bad = json.loads((tmp_path / "bad" / "gate.json").read_text())
    failed = {c["name"] for c in bad["checks"] if not c["passed"]}
    assert {"min_pgd_acc", "int8.max_pgd_drop", "int8.min_agreement"} <= failed, failed
    assert bad["int8"]["pgd_acc"] < good["int8"]["pgd_acc"] - 0.05
