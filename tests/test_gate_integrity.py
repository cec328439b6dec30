"""A gate that cannot be fooled (issue 19): it checks the model and the data it is given before it
measures (exit 2), fails non-finite numbers and chance-level models whatever the thresholds say
(exit 1), and keeps the verdict's exit code when the registry cannot be reached."""

from __future__ import annotations

import json
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from clitools import RECIPES, cli, one_error, sets, small_gate  # type: ignore[import-not-found]
from conftest import LIGHT_EVAL  # type: ignore[import-not-found]
from onnx import TensorProto, helper, numpy_helper

from robprune_deploy.evaluation import OnnxClassifier
from robprune_deploy.evaluation.parity import parity
from robprune_deploy.gate.validation import chance_rate, least_significant_accuracy

HYDRA = RECIPES / "digits_hydra.yaml"
SMALL = small_gate(*LIGHT_EVAL)
NO_THRESHOLDS = sets(
    *(
        f"gate.{name}=null"
        for name in (
            "min_clean_acc",
            "min_pgd_acc",
            "max_pgd_drop",
            "max_parity_error",
            "sparsity_tolerance",
            "max_square_below_pgd",
            "max_autoattack_drop",
            "min_autoattack_acc",
        )
    ),
    "gate.indicators=[]",  # a constant model has no gradient: the indicators would fail it too
)


def edited(source: Path, target: Path, edit: Any) -> Path:
    proto = onnx.load(str(source))
    edit(proto)
    onnx.save(proto, str(target))
    return target


def _initializer(proto: onnx.ModelProto, name: str) -> tuple[onnx.TensorProto, np.ndarray]:
    tensor = next(t for t in proto.graph.initializer if t.name == name)
    return tensor, numpy_helper.to_array(tensor).copy()


def _replace(proto: onnx.ModelProto, name: str, values: np.ndarray) -> None:
    tensor, _ = _initializer(proto, name)
    tensor.CopyFrom(numpy_helper.from_array(values.astype(np.float32), name))


def five_classes(proto: onnx.ModelProto) -> None:
    for name in ("body.classifier.3.weight", "body.classifier.3.bias"):
        _replace(proto, name, _initializer(proto, name)[1][:5])
    proto.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 5
    del proto.graph.value_info[:]  # recorded intermediate shapes of the 10-class graph


def two_inputs(proto: onnx.ModelProto) -> None:
    proto.graph.input.append(helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["batch", 1, 16, 16]))


def two_outputs(proto: onnx.ModelProto) -> None:
    proto.graph.node.append(helper.make_node("Relu", ["logits"], ["probs"]))
    proto.graph.output.append(helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 10]))


def fixed_batch(proto: onnx.ModelProto) -> None:
    proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1


def bad_metadata(proto: onnx.ModelProto) -> None:
    entry = next(e for e in proto.metadata_props if e.key == "robprune.claimed_sparsity")
    entry.value = "ninety percent"


def nan_weights(proto: onnx.ModelProto) -> None:
    _, weight = _initializer(proto, "body.classifier.1.weight")
    weight[0, :7] = np.nan
    _replace(proto, "body.classifier.1.weight", weight)


def constant_prediction(proto: onnx.ModelProto) -> None:
    """Logits that ignore the image: always class 3."""
    _replace(proto, "body.classifier.3.weight", np.zeros_like(_initializer(proto, "body.classifier.3.weight")[1]))
    _replace(proto, "body.classifier.3.bias", np.eye(10, dtype=np.float32)[3])


def gate(capsys, digits_run, model: Path | str, report: Path, *extra: str) -> tuple[int, list[str]]:
    return cli(capsys, "gate", model, "--recipe", HYDRA, "--report", report, "--quiet", *SMALL, *extra)


@pytest.fixture()
def gate_temp_folders(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The gate's temporary folders are gone when it returns, whatever the outcome. The gate gets a
    temporary root of its own: another process's gate on the same machine (a shared CI runner)
    must not be mistaken for a leftover of this one."""
    root = tmp_path_factory.mktemp("gate_tmp")
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    yield
    assert tempfile.gettempdir() == str(root)
    assert not list(root.glob("robprune-gate-*"))


# --- 2. the gate checks what it is given, before measuring ----------------------------------------
@pytest.mark.parametrize(
    ("edit", "as_baseline", "needle"),
    [
        (two_inputs, False, "has 2 inputs ('input', 'mask'); a classifier takes one image input"),
        (two_outputs, False, "has 2 outputs ('logits', 'probs')"),
        (five_classes, False, "has shape ['batch', 5], the data needs [batch, 10]"),
        (five_classes, True, "has shape ['batch', 5], the data needs [batch, 10]"),
        (fixed_batch, False, "has a fixed batch of 1"),
        (bad_metadata, False, "metadata robprune.claimed_sparsity = 'ninety percent' is not a number"),
    ],
)
def test_a_model_that_is_not_a_classifier_of_the_data_exits_2_before_measuring(
    digits_run, tmp_path, capsys, gate_temp_folders, edit, as_baseline, needle
) -> None:
    model = digits_run["out"] / "model.onnx"
    broken = edited(model, tmp_path / "broken.onnx", edit)
    extra = sets(f"gate.baseline={broken}") if as_baseline else []
    started = time.monotonic()
    code, err = gate(capsys, digits_run, model if as_baseline else broken, tmp_path / "r", *extra)
    assert code == 2
    one_error(err, "broken.onnx", needle)
    assert not (tmp_path / "r").exists()
    assert time.monotonic() - started < 10  # refused before PGD and Square ran


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("evaluate.num_examples=1", "all of class"),
        ("data.test_subset=1", "all of class"),
        ("evaluate.num_examples=3", "too few to show accuracy above chance"),
    ],
)
def test_evaluation_data_that_cannot_measure_accuracy_exits_2(digits_run, tmp_path, capsys, override, needle) -> None:
    code, err = gate(capsys, digits_run, digits_run["out"] / "model.onnx", tmp_path / "r", *sets(override))
    assert code == 2
    one_error(err, "evaluation subset", needle)


def test_nan_weights_fail_the_gate_even_without_thresholds(digits_run, tmp_path, capsys, gate_temp_folders) -> None:
    broken = edited(digits_run["out"] / "model.onnx", tmp_path / "nan.onnx", nan_weights)
    code, err = gate(capsys, digits_run, broken, tmp_path / "r", *NO_THRESHOLDS)
    assert code == 1, err
    report = json.loads((tmp_path / "r" / "gate.json").read_text())
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["finite_weights"]["measured"] == 7 and not checks["finite_weights"]["passed"]
    assert checks["finite_logits"]["measured"] > 0 and not checks["finite_logits"]["passed"]
    assert (
        not checks["finite_measurements"]["passed"]
        and "candidate.max_abs_diff" in checks["finite_measurements"]["detail"]
    )
    assert not checks["above_chance"]["passed"]


@pytest.mark.parametrize("threshold", ["none", "gate.min_clean_acc=0.05"])
def test_a_model_at_chance_fails_whatever_the_thresholds(digits_run, tmp_path, capsys, threshold) -> None:
    constant = edited(digits_run["out"] / "model.onnx", tmp_path / "constant.onnx", constant_prediction)
    extra = [] if threshold == "none" else sets(threshold)
    code, _ = gate(capsys, digits_run, constant, tmp_path / "r", *NO_THRESHOLDS, *extra)
    assert code == 1
    report = json.loads((tmp_path / "r" / "gate.json").read_text())
    checks = {c["name"]: c for c in report["checks"]}
    assert report["failures"] == ["above_chance"]
    assert checks["above_chance"]["measured"] < checks["above_chance"]["threshold"] < 0.35
    if threshold != "none":
        assert checks["min_clean_acc"]["passed"]  # the threshold alone would have let it through


def test_the_chance_rule_uses_the_majority_class_and_an_exact_binomial_test() -> None:
    from collections import Counter

    from scipy.stats import binom

    assert chance_rate(Counter({0: 5, 1: 5}), 10) == 0.5  # two classes present: a constant predictor gets 50%
    assert chance_rate(Counter(dict.fromkeys(range(10), 10)), 10) == 0.1
    # 60 examples, chance 10%: 13 correct is significant at 1%, 12 is not
    assert least_significant_accuracy(60, 0.1) == pytest.approx(13 / 60)
    assert binom.sf(12, 60, 0.1) <= 0.01 < binom.sf(11, 60, 0.1)
    assert least_significant_accuracy(3, 0.5) > 1  # no accuracy on 3 examples can be told from chance


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_parity_with_a_non_finite_logit_is_not_finite(digits_run, digits, bad) -> None:
    session = OnnxClassifier(digits_run["out"] / "model.onnx", ["cpu"])

    class Broken(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(()))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            logits = torch.from_numpy(session.predict(x.numpy())) * self.scale
            logits[-1, 0] = bad
            return logits

    batches = [(digits.test.tensors[0][i : i + 8], digits.test.tensors[1][i : i + 8]) for i in (0, 8)]
    result = parity(Broken(), session, batches)
    assert not np.isfinite(result.max_abs_diff)  # max(0.0, nan) would have said 0.0


# --- 3. exit codes a CI job can trust ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--register", "digits", "--alias", "latest"], "--alias 'latest': the alias 'latest' is reserved"),
        (["--register", "digits", "--alias", "V2"], "reserved by MLflow for versions"),
        (["--register", "a:b"], "cannot contain '/' or ':'"),
        (["--alias", "production"], "--alias needs --register"),
        ("existing file", "--report"),
    ],
)
def test_bad_gate_arguments_exit_2_before_measuring(digits_run, tmp_path, capsys, args, needle) -> None:
    report = tmp_path / "r"
    if args == "existing file":
        report.write_text("a file")
        args = []
    started = time.monotonic()
    code, err = gate(capsys, digits_run, digits_run["out"] / "model.onnx", report, *args)
    assert code == 2
    one_error(err, needle)
    assert time.monotonic() - started < 5


# --- 6. the registry being down keeps the verdict ------------------------------------------------------
def _closed_port() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


@pytest.mark.parametrize("verdict", [0, 1])
def test_register_with_the_server_down_keeps_the_verdicts_exit_code(digits_run, tmp_path, capsys, verdict) -> None:
    uri = _closed_port()  # a server that does not answer at all is tested in test_hostile_recipes
    threshold = "gate.min_clean_acc=0.3" if verdict == 0 else "gate.min_clean_acc=0.999"
    code, err = gate(
        capsys,
        digits_run,
        digits_run["out"] / "model.onnx",
        tmp_path / "r",
        "--tracking-uri",
        uri,
        "--register",
        "digits-down",
        "--alias",
        "production",
        *NO_THRESHOLDS,
        *sets(threshold, "tracking.timeout_s=1", "tracking.retries=1"),
    )
    assert code == verdict, err
    one_error(err, "registration as 'digits-down' failed, the verdict stands", uri)
    report = json.loads((tmp_path / "r" / "gate.json").read_text())
    assert report["passed"] is (verdict == 0) and "did not answer" in report["registration_error"]
