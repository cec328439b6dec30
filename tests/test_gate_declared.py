"""The gate checks what was declared, as the model will be served (issue 24, items 2 and 3).

- Precision is declared (``gate.precision``, ``robprune gate --precision``), never guessed from the
  graph: a dead QuantizeLinear/DequantizeLinear pair does not make an FP32 model "INT8" and drop
  its AutoAttack thresholds; an enforced threshold that was not measured fails.
- Predictions must not depend on the batch size: ``batch_consistency`` compares batch 1, the
  evaluation batch, the whole subset and a batch size nothing else feeds.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from clitools import cli, one_error, sets  # type: ignore[import-not-found]
from onnx import TensorProto, helper, numpy_helper
from test_gate_integrity import HYDRA, NO_THRESHOLDS, SMALL, edited  # type: ignore[import-not-found]

from robprune_deploy.gate.checks import Measurements, run_checks
from robprune_deploy.gate.consistency import TIE_TOLERANCE, compare_batches, unseen_batch
from robprune_deploy.quantization import is_int8
from robprune_deploy.recipe import GateSection


def gate(capsys, model: Path, report: Path, *extra: str) -> tuple[int, list[str], dict]:
    code, err = cli(capsys, "gate", model, "--recipe", HYDRA, "--report", report, "--quiet", *SMALL, *extra)
    found = report / "gate.json"
    return code, err, json.loads(found.read_text()) if found.is_file() else {}


def checks_of(report: dict) -> dict[str, dict]:
    return {c["name"]: c for c in report["checks"]}


def dead_qdq_pair(proto: onnx.ModelProto) -> None:
    """A Q/DQ pair on the input whose output feeds nothing, with an INT8 zero point: the graph now
    looks quantized to a structural test, and computes exactly what it computed before."""
    graph = proto.graph
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array(1 / 127, np.float32), "dead_scale"),
            numpy_helper.from_array(np.array(0, np.int8), "dead_zero_point"),
        ]
    )
    image = graph.input[0].name
    graph.node.extend(
        [
            helper.make_node("QuantizeLinear", [image, "dead_scale", "dead_zero_point"], ["dead_q"]),
            helper.make_node("DequantizeLinear", ["dead_q", "dead_scale", "dead_zero_point"], ["dead_dq"]),
        ]
    )


def batch_dependent(trigger: int):
    """Logits plus 100 on class 0 whenever the batch holds exactly ``trigger`` images (read through
    Shape): every threshold measured at the evaluation batch is the real model's."""

    def edit(proto: onnx.ModelProto) -> None:
        graph = proto.graph
        out = graph.output[0].name
        for node in graph.node:
            node.output[:] = [f"{out}_raw" if o == out else o for o in node.output]
        graph.initializer.extend(
            [
                numpy_helper.from_array(np.array([0], np.int64), "bd_zero"),
                numpy_helper.from_array(np.array([1], np.int64), "bd_one"),
                numpy_helper.from_array(np.array([trigger], np.int64), "bd_trigger"),
                numpy_helper.from_array(100 * np.eye(10, dtype=np.float32)[0], "bd_offset"),
            ]
        )
        graph.node.extend(
            [
                helper.make_node("Shape", [graph.input[0].name], ["bd_shape"]),
                helper.make_node("Slice", ["bd_shape", "bd_zero", "bd_one"], ["bd_batch"]),
                helper.make_node("Equal", ["bd_batch", "bd_trigger"], ["bd_hit"]),
                helper.make_node("Cast", ["bd_hit"], ["bd_gain"], to=TensorProto.FLOAT),
                helper.make_node("Mul", ["bd_gain", "bd_offset"], ["bd_shift"]),
                helper.make_node("Add", [f"{out}_raw", "bd_shift"], [out]),
            ]
        )
        del graph.value_info[:]

    return edit


# --- item 2: declared, not guessed ----------------------------------------------------------------
def test_a_dead_qdq_pair_keeps_the_autoattack_threshold_enforced_and_measured(digits_run, tmp_path, capsys) -> None:
    doctored = edited(digits_run["out"] / "model.onnx", tmp_path / "model.onnx", dead_qdq_pair)
    assert is_int8(onnx.load(str(doctored)))  # the structural guess would have gated it as INT8
    code, err, report = gate(capsys, doctored, tmp_path / "r", *NO_THRESHOLDS, *sets("gate.min_autoattack_acc=0.99"))
    assert code == 1, err
    assert report["precision"] == "fp32" and report["failures"] == ["min_autoattack_acc"]
    check = checks_of(report)["min_autoattack_acc"]
    assert check["measured"] == report["candidate"]["autoattack_acc"]
    assert 0.0 <= check["measured"] < 0.99 and check["detail"] == "worst case over AutoAttack"
    assert not any(c["name"].startswith("int8.") for c in report["checks"])
    # Otherwise a genuine model: the same class at every batch size (the FP32 baseline's check is in
    # tests/test_int8.py), and its clean accuracy at batch 1 reported.
    consistent = checks_of(report)["batch_consistency"]
    assert consistent["passed"] and consistent["measured"] == 0
    assert consistent["detail"].startswith("same class at batch sizes 60, 1, 7 on all 60 examples")
    assert report["candidate"]["clean_acc_b1"] == pytest.approx(report["candidate"]["clean_acc"])
    markdown = (tmp_path / "r" / "gate.md").read_text()
    assert "| | clean | clean, batch 1 |" in markdown and "declared fp32" in markdown


def test_autoattack_thresholds_on_an_int8_candidate_fail_as_not_measured() -> None:
    gate_section = GateSection(min_autoattack_acc=0.1, max_autoattack_drop=0.5, indicators=[])
    int8 = Measurements(clean_acc=0.9, pgd_acc=0.5, max_abs_diff=0.01, agreement=1.0)
    fp32 = Measurements(clean_acc=0.9, pgd_acc=0.5, autoattack_acc=0.45, max_abs_diff=0.0)
    checks = {c.name: c for c in run_checks(gate_section, int8, fp32, "int8")}
    for name in ("min_autoattack_acc", "max_autoattack_drop"):
        assert not checks[name].passed and checks[name].measured is None
        assert checks[name].detail.startswith("not measured: an INT8 model is attacked with PGD")
    assert checks["int8.min_agreement"].passed and checks["int8.max_clean_drop"].measured == 0.0


def test_a_file_written_as_int8_gated_undeclared_exits_2_naming_the_flag(digits_run, tmp_path, capsys) -> None:
    def written_int8(proto: onnx.ModelProto) -> None:
        entry = proto.metadata_props.add()
        entry.key, entry.value = "robprune.precision", "int8"

    marked = edited(digits_run["out"] / "model.onnx", tmp_path / "marked.onnx", written_int8)
    code, err, _ = gate(capsys, marked, tmp_path / "r")
    assert code == 2
    one_error(err, "marked.onnx", "robprune.precision=int8", "declared fp32", "--precision int8")
    assert not (tmp_path / "r").exists()


# --- item 3: served the way it will be served -----------------------------------------------------
@pytest.mark.parametrize("trigger", [1, 7])
def test_predictions_that_change_with_the_batch_size_fail_batch_consistency(
    digits_run, tmp_path, capsys, trigger
) -> None:
    assert unseen_batch({1, 60, 256}) == 7  # SMALL: 60 examples in one evaluation batch, latency batch 256
    model = edited(digits_run["out"] / "model.onnx", tmp_path / "shifty.onnx", batch_dependent(trigger))
    code, err, report = gate(capsys, model, tmp_path / "r", *NO_THRESHOLDS, *sets("gate.min_clean_acc=0.5"))
    assert code == 1, err
    assert report["failures"] == ["batch_consistency"]
    checks = checks_of(report)
    assert checks["min_clean_acc"]["passed"] and report["candidate"]["clean_acc"] >= 0.5
    failed = checks["batch_consistency"]
    # Every example not of class 0 turns into class 0 at the trigger batch size.
    assert failed["measured"] >= 40 and failed["threshold"] == 0
    assert f"{int(failed['measured'])} of 60 examples change class with the batch size" in failed["detail"]
    assert f"at batch {trigger})" in failed["detail"]
    if trigger == 1:
        assert report["candidate"]["clean_acc_b1"] < 0.2 < 0.5 <= report["candidate"]["clean_acc"]
        row = f"| candidate | {report['candidate']['clean_acc']:.4f} | {report['candidate']['clean_acc_b1']:.4f} |"
        assert row in (tmp_path / "r" / "gate.md").read_text()
    else:
        assert report["candidate"]["clean_acc_b1"] == report["candidate"]["clean_acc"]


def test_a_tie_is_not_a_disagreement_but_a_margin_is() -> None:
    labels = np.array([0, 1])
    reference = np.array([[2.0, 2.0 - TIE_TOLERANCE / 4, 0.0], [0.0, 3.0, 1.0]])
    tied = reference.copy()
    tied[0, 1] = 2.0 + TIE_TOLERANCE / 4  # the two top logits swap within the tolerance
    result = compare_batches({60: reference, 1: tied}, labels, 60)
    assert (result.disagreements, result.ties) == (0, 1)
    flipped = reference.copy()
    flipped[1] = [0.0, 3.0, 3.01]  # a margin of 0.01: a different answer, not a tie
    result = compare_batches({60: reference, 1: tied, 7: flipped}, labels, 60)
    assert (result.disagreements, result.ties) == (1, 1)
    assert result.first == "example 1: class 1 at batch 60, 2 at batch 7"
    assert result.accuracy == {60: 1.0, 1: 0.5, 7: 0.5}
