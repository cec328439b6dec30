"""Hostile recipes and arguments (issue 19): no hangs (recipe size, depth and alias limits, a
tracking server that does not answer), the requested ONNX opset or a clear refusal, Python API
arguments as RobPruneError, and recipes of extreme numbers that either run with finite figures or
exit 2 with one line."""

from __future__ import annotations

import contextlib
import io
import json
import math
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from clitools import RECIPES, cli, one_error, sets  # type: ignore[import-not-found]
from conftest import LIGHT_EVAL  # type: ignore[import-not-found]
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import robprune_deploy as rp
from robprune_deploy.algorithms import ALGORITHMS
from robprune_deploy.errors import ArgumentError, DatasetError, RobPruneError, ShapeError
from robprune_deploy.export.onnx_export import onnx_opset
from robprune_deploy.pipeline import RunContext
from robprune_deploy.pipeline.ownership import check_output_path
from robprune_deploy.recipe import Recipe, load_recipe

HYDRA = RECIPES / "digits_hydra.yaml"
OFF = sets("tracking.enabled=false")


# --- 6. no hangs ---------------------------------------------------------------------------------
def _bomb(levels: int = 9) -> str:
    lines = ['a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for previous, name in zip("abcdefgh", "bcdefghi"[: levels - 1], strict=False):
        lines.append(f"{name}: &{name} [{', '.join(['*' + previous] * 9)}]")
    return "\n".join(lines) + "\nseed: *i\n"


HOSTILE_FILES = {
    "alias bomb": (_bomb(), "expands to more than 100000 values"),
    "deep nesting": ("seed: " + "[" * 50_000 + "]" * 50_000, "nested deeper than 32 levels"),
    "recursive alias": ("seed: &a [*a]\n", "an alias refers to a value that contains it"),
    "alias chain": (
        "\n".join(["a0: &a0 [1]"] + [f"a{i}: &a{i} [*a{i - 1}]" for i in range(1, 60)]) + "\nseed: *a59\n",
        "nested deeper than 32 levels once aliases are expanded",
    ),
    "too large": ("# padding\n" * 110_000, "larger than 1000000 bytes"),
    "huge value": ("seed: '" + "9" * 500_000 + "'\n", "seed: Unable to parse input string as an integer"),
}


@pytest.mark.parametrize("case", list(HOSTILE_FILES))
def test_hostile_recipe_files_fail_fast_with_a_short_message(tmp_path, capsys, case) -> None:
    text, needle = HOSTILE_FILES[case]
    recipe = tmp_path / "r.yaml"
    recipe.write_text(text)
    assert len(_bomb().encode()) < 500
    started = time.monotonic()
    code, err = cli(capsys, "run", recipe, "--out", tmp_path / "out", *OFF)
    assert time.monotonic() - started < 5
    assert code == 2
    line = one_error(err, str(recipe), needle)
    assert len(line) < 300


@pytest.mark.parametrize("path", ["/dev/zero", "/dev/null"])
def test_a_recipe_that_is_not_a_regular_file_is_refused(tmp_path, capsys, path) -> None:
    code, err = cli(capsys, "run", path, "--out", tmp_path / "out", *OFF)
    assert code == 2
    one_error(err, f"recipe {path}: not a regular file")


def test_an_override_cannot_smuggle_a_bomb(tmp_path, capsys) -> None:
    levels = ["&l0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    levels += [f"&l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 7)]  # 10^7 values once expanded
    code, err = cli(capsys, "run", HYDRA, "--out", tmp_path / "out", "--set", f"seed=[{', '.join(levels)}]", *OFF)
    assert code == 2
    assert len(one_error(err, "--set seed", "expands to more than")) < 300


@pytest.mark.parametrize("server", ["closed port", "silent server"])
def test_a_tracking_server_that_does_not_answer_fails_fast_with_its_uri(
    tmp_path, capsys, silent_server, server
) -> None:
    if server == "closed port":
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            uri = f"http://127.0.0.1:{probe.getsockname()[1]}"
    else:
        uri = silent_server
    started = time.monotonic()
    code, err = cli(
        capsys,
        "run",
        HYDRA,
        "--out",
        tmp_path / "out",
        "--tracking-uri",
        uri,
        *sets("tracking.timeout_s=1", "tracking.retries=1"),
    )
    elapsed = time.monotonic() - started
    assert code == 2 and elapsed < 15
    one_error(err, f"tracking.tracking_uri {uri}", "did not answer", "mlflow server")
    assert not (tmp_path / "out").exists()


# --- 5. what the recipe asks for is what it gets -------------------------------------------------
@pytest.mark.parametrize("opset", [17, 20])
def test_export_writes_the_requested_opset(robust_cnn, digits, tmp_path, opset) -> None:
    path = rp.export_onnx(robust_cnn, tmp_path / "m.onnx", digits.test.tensors[0][:1], opset=opset)
    assert onnx_opset(onnx.load(str(path))) == opset
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # no external-data file left beside it
    x = digits.test.tensors[0][:8]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        assert np.abs(got - robust_cnn.eval()(x).numpy()).max() < 1e-4


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["export.opset=12"], "export.opset: Input should be greater than or equal to 13"),
        (["export.opset=24"], "export.opset: Input should be less than or equal to 23"),
        (["export.opset=16", "model.name=digits_resnet"], "export.opset 16: onnx cannot convert"),
    ],
)
def test_an_opset_that_cannot_be_produced_exits_2_naming_the_range(tmp_path, capsys, overrides, needle) -> None:
    out = tmp_path / "out"
    code, err = cli(capsys, "run", HYDRA, "--out", out, *sets(*overrides), *OFF)
    assert code == 2
    line = one_error(err, needle)
    assert "opset" in line and ("18-23" in line or "equal to" in line)
    assert not out.exists()  # found in preflight, before any training


# --- 7. the Python API raises RobPruneError subclasses ------------------------------------------------
def _batches(
    digits: Any, n: int = 2, labels_offset: int = 0, flat: bool = False
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    x, y = digits.train.tensors
    out = []
    for i in range(n):
        xb, yb = x[i * 8 : i * 8 + 8], y[i * 8 : i * 8 + 8] + (labels_offset if i == n - 1 else 0)
        out.append((xb.flatten(1) if flat else xb, yb))
    return out


API_CASES: dict[str, tuple[Any, type[RobPruneError], str]] = {
    "model is not a module": (
        lambda m, d: rp.prune("digits_cnn", "hydra", _batches(d), ratio=0.5),
        ArgumentError,
        "model must be a torch.nn.Module",
    ),
    "ratio is text": (
        lambda m, d: rp.prune(m, "hydra", _batches(d), ratio="0.5"),
        ArgumentError,
        "ratio: must be a number",
    ),
    "ratio is NaN": (lambda m, d: rp.prune(m, "hydra", _batches(d), ratio=float("nan")), ArgumentError, "(0, 1)"),
    "attack is a dict": (
        lambda m, d: rp.prune(m, "hydra", _batches(d), ratio=0.5, attack={"eps": 0.1}),
        ArgumentError,
        "attack must be a ThreatModel",
    ),
    "empty data": (lambda m, d: rp.prune(m, "hydra", [], ratio=0.5), DatasetError, "yields no batches"),
    "not pairs": (lambda m, d: rp.prune(m, "hydra", [torch.zeros(2, 1, 16, 16)], ratio=0.5), ArgumentError, "pair"),
    "labels out of range (second batch)": (
        lambda m, d: rp.prune(m, "hydra", _batches(d, labels_offset=10), ratio=0.5, epochs=1),
        DatasetError,
        "batch 1: label",
    ),
    "flat inputs": (lambda m, d: rp.prune(m, "hydra", _batches(d, flat=True), ratio=0.5), ShapeError, "N x C x H x W"),
    "negative eps": (lambda m, d: rp.ThreatModel(eps=-0.1, step_size=0.01, steps=3), ArgumentError, "ThreatModel.eps"),
    "NaN eps": (
        lambda m, d: rp.ThreatModel(eps=float("nan"), step_size=0.01, steps=3),
        ArgumentError,
        "ThreatModel.eps",
    ),
    "fractional steps": (lambda m, d: rp.ThreatModel(eps=0.1, step_size=0.01, steps=2.5), ArgumentError, "steps"),
    "evaluate nothing": (lambda m, d: rp.evaluate_onnx("x.onnx", []), DatasetError, "no batches to evaluate"),
    "export a string": (lambda m, d: rp.export_onnx(m, "x.onnx", "not a tensor"), ArgumentError, "example_input"),
    "export opset 7": (
        lambda m, d: rp.export_onnx(m, "x.onnx", torch.zeros(1, 1, 16, 16), opset=7),
        ArgumentError,
        "13-23",
    ),
}


@pytest.mark.parametrize("case", list(API_CASES))
def test_python_api_bad_arguments_raise_robprune_errors(robust_cnn, digits, case) -> None:
    call, error, needle = API_CASES[case]
    with pytest.raises(error, match=needle.replace("(", r"\(").replace(")", r"\)")) as info:
        call(robust_cnn, digits)
    assert isinstance(info.value, RobPruneError)
    assert "\n" not in str(info.value)


def test_argument_errors_are_still_type_and_value_errors() -> None:
    assert issubclass(ArgumentError, TypeError) and issubclass(ArgumentError, ValueError)


# --- 4. extreme numbers: finite figures, or exit 2 with one line ----------------------------------
def _numeric_fields(model: type[Any], prefix: str = "") -> list[str]:
    found = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if hasattr(annotation, "model_fields"):
            found += _numeric_fields(annotation, f"{prefix}{name}.")
        elif any(t in str(annotation) for t in ("int", "float")) and "bool" not in str(annotation):
            found.append(f"{prefix}{field.alias or name}")
    return found


HYDRA_CONFIG = [f"compression.config.{f}" for f in _numeric_fields(ALGORITHMS.get("hydra").Config)]
NUMERIC = sorted(_numeric_fields(Recipe)) + HYDRA_CONFIG
EXTREMES = [float("nan"), float("inf"), -float("inf"), 1e308, 10**18, 2**64, 0, 0.0, -1, -1e-9, 1e-300]
ORDINARY = [1, 2, 0.5]  # so that a good share of the generated recipes validates and reaches preflight
TINY = [
    "pretrain.epochs=0",
    "compression.config.epochs=1",
    "compression.config.granularity=unstructured",
    "finetune.epochs=1",
    "data.train_subset=48",
    "evaluate.num_examples=40",
    *LIGHT_EVAL,
    "evaluate.square_queries=4",
    "evaluate.square_examples=8",
    "evaluate.latency.repeats=1",
    "evaluate.latency.warmup=0",
    "attack.train_steps=1",
    "attack.eval_steps=2",
    "tracking.enabled=false",
]


def _override(path: str, value: float) -> str:
    """``path=value`` in YAML (``.nan``, ``.inf``, ``1e+308``, ``18446744073709551616``)."""
    if isinstance(value, float) and not math.isfinite(value):
        text = ".nan" if math.isnan(value) else (".inf" if value > 0 else "-.inf")
    else:
        text = repr(value)
    return f"{path}={text}"


def test_a_run_refused_by_its_preflight_creates_no_tracking_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default store is ``./mlflow.db``: a refused run must not leave one in the user's folder."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    code, err = cli(capsys, "run", HYDRA, "--out", tmp_path / "out", *sets("model.checkpoint=missing.pt"))
    assert code == 2
    one_error(err, "checkpoint missing.pt: no such file")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


changes = st.lists(
    st.tuples(st.sampled_from(NUMERIC), st.sampled_from(EXTREMES + ORDINARY)), min_size=1, max_size=3
).filter(lambda edits: any(all(v is not o for o in ORDINARY) for _, v in edits))  # at least one extreme


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes)
def test_extreme_numbers_pass_validation_and_preflight_or_are_one_error(tmp_path, edits: list[tuple[str, Any]]) -> None:
    """Most examples: everything ``run`` does before its first write (validation, output path,
    device, data, model on the data, evaluation labels, opset probe)."""
    overrides = [*TINY, *(_override(p, v) for p, v in edits)]
    try:
        recipe = load_recipe(HYDRA, overrides)
        check_output_path(tmp_path / "out")
        RunContext(recipe, tmp_path / "out", show_progress=False).preflight()
    except RobPruneError as exc:
        assert str(exc) and "\n" not in str(exc)
    assert not (tmp_path / "out").exists()


@settings(max_examples=2, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(NUMERIC), st.sampled_from([0, 0.0, 1, float("nan"), -1, 1e308])), max_size=2))
def test_extreme_numbers_in_real_runs_give_finite_figures_or_one_error(
    tmp_path_factory, capsys, edits: list[tuple[str, Any]]
) -> None:
    """A few real runs (pretrain and prune stages, tiny budgets) with generated extreme numbers."""
    out = tmp_path_factory.mktemp("extreme") / "out"
    overrides = [*TINY, *(_override(p, v) for p, v in edits)]
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code, err = cli(capsys, "prune", HYDRA, "--out", out, *sets(*overrides))
    if code == 2:
        one_error(err)
        return
    assert code == 0, err
    figures = json.loads(stdout.getvalue())
    numbers = [v for v in figures.values() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    assert numbers and all(math.isfinite(v) for v in numbers), figures
    state = json.loads((Path(out) / "state.json").read_text())
    dense = [v for v in state["stages"]["pretrain"].values() if isinstance(v, float)]
    assert all(math.isfinite(v) for v in dense)
