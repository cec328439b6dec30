"""Hostile plugins, tracking stores and ONNX graphs: each is refused with one clear line.

Plugins are real temporary distributions: a module and a ``*.dist-info`` folder with
``entry_points.txt`` put on ``sys.path``, which is all :mod:`importlib.metadata` needs.
"""

from __future__ import annotations

import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import yaml
from clitools import RECIPES, cli, one_error, sets  # type: ignore[import-not-found]
from onnx import TensorProto, helper, numpy_helper

from robprune_deploy.algorithms import ALGORITHMS, BUILT_IN_DISTRIBUTIONS
from robprune_deploy.evaluation.memory_bound import session_memory_bound

Installer = Callable[[str, str, dict[str, str]], Path]

QUICK_PRUNE = sets(
    "pretrain.enabled=false",
    "data.train_subset=64",
    "attack.train_steps=1",
    "attack.eval_steps=1",
    "evaluate.num_examples=20",
    "tracking.enabled=false",
)
"""A prune stage of a few seconds: no pretraining, 64 training images, one-step attacks."""

PLUGIN_CODE = '''
from typing import ClassVar

import torch
from pydantic import Field
from torch.nn.utils import parametrize

import robprune_deploy as rp


class Options(rp.AlgorithmConfig):
    seed: int = Field(0, ge=0, description="seed")


class Base(rp.CompressionAlgorithm):
    Config: ClassVar[type[rp.AlgorithmConfig]] = Options
    description = "hostile test plugin"

    def result(self, model, context):
        return rp.PruningResult(
            model,
            algorithm="test",
            granularity=rp.Granularity.UNSTRUCTURED,
            ratio=context.ratio,
            example_inputs=context.example_inputs,
            dense_count=rp.count_model(model, context.example_inputs),
        )


class Impostor(Base):
    def apply(self, model, context):
        raise RuntimeError("the impostor ran")


class Crashing(Base):
    def apply(self, model, context):
        return {"masks": 1 / 0}


class WrongMask(Base):
    def apply(self, model, context):
        weight = model.body.features[0].weight
        rp.apply_masks(model, {"body.features.0.weight": torch.ones(weight.shape[0], dtype=torch.bool)})
        return self.result(model, context)


class BroadcastMask(Base):
    """Bypasses apply_masks: a [out, 1, 1, 1] mask broadcasts, torch accepts it."""

    def apply(self, model, context):
        conv = model.body.features[0]
        mask = torch.zeros(conv.weight.shape[0], 1, 1, 1, dtype=torch.bool)
        mask[: conv.weight.shape[0] // 2] = True
        parametrize.register_parametrization(conv, "weight", rp.masking.FixedMask(mask))
        return self.result(model, context)
'''


@pytest.fixture()
def install_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Installer]:
    """``install(distribution, module source, {entry point name: class})``: a plugin distribution
    on the path, seen by the algorithm registry; removed again afterwards."""
    modules: list[str] = []

    def install(distribution: str, source: str, entry_points: dict[str, str]) -> Path:
        module = distribution.replace("-", "_")
        root = tmp_path / f"site_{module}"
        root.mkdir()
        (root / f"{module}.py").write_text(source)
        info = root / f"{module}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 1.0\n")
        lines = [f"{name} = {module}:{cls}" for name, cls in entry_points.items()]
        (info / "entry_points.txt").write_text("[robprune_deploy.algorithms]\n" + "\n".join(lines) + "\n")
        monkeypatch.syspath_prepend(str(root))
        modules.append(module)
        ALGORITHMS.refresh()
        return root

    yield install
    monkeypatch.undo()
    for module in modules:
        sys.modules.pop(module, None)
    ALGORITHMS.refresh()


def plugin_recipe(tmp_path: Path, algorithm: str) -> Path:
    path = tmp_path / f"{algorithm}.yaml"
    document = {
        "model": {"name": "digits_cnn"},
        "data": {"name": "digits", "image_size": 16, "batch_size": 32},
        "compression": {"algorithm": algorithm, "ratio": 0.5, "ignored_scope": {"names": ["body.classifier.3"]}},
    }
    path.write_text(yaml.safe_dump(document))
    return path


def impostor_warning() -> str:
    return (
        "warning: algorithm 's2ap' is declared more than once: the entry point of evil-plugin is ignored; "
        f"the built-in of {ALGORITHMS.provider('s2ap')} is used"
    )


def test_a_plugin_cannot_take_a_built_in_name(install_plugin: Installer, capsys, tmp_path: Path) -> None:
    install_plugin("evil-plugin", PLUGIN_CODE, {"s2ap": "Impostor"})
    assert ALGORITHMS.provider("s2ap") in BUILT_IN_DISTRIBUTIONS  # robprune-s2ap (plugins/robprune_s2ap)
    assert ALGORITHMS.get("s2ap").__module__ == "robprune_s2ap.algorithm"

    code, lines = cli(capsys, "algorithms")
    assert code == 0 and lines == [impostor_warning()]

    out = tmp_path / "out"
    quick_s2ap = sets("compression.ratio=0.5", "compression.config.epochs=1", "compression.config.warmup_epochs=0")
    code, lines = cli(capsys, "prune", RECIPES / "digits_s2ap.yaml", "--out", out, "--quiet", *QUICK_PRUNE, *quick_s2ap)
    assert code == 0 and lines == [impostor_warning()]  # the impostor's apply would have raised
    assert (out / "pruned.pt").is_file()


def test_two_plugins_with_one_name_are_both_refused(install_plugin: Installer, capsys, tmp_path: Path) -> None:
    install_plugin("first-plugin", PLUGIN_CODE, {"dup": "Impostor"})
    install_plugin("second-plugin", PLUGIN_CODE, {"dup": "Crashing"})
    refusal = (
        "algorithm 'dup' is declared by 2 plugins (first-plugin, second-plugin): none is used, since install "
        "order would pick one; uninstall all but one"
    )
    code, lines = cli(capsys, "algorithms")
    assert code == 0 and lines == [f"warning: {refusal}"]
    assert "dup" not in capsys.readouterr().out

    out = tmp_path / "out"
    code, lines = cli(capsys, "run", plugin_recipe(tmp_path, "dup"), "--out", out, *QUICK_PRUNE)
    assert code == 2 and lines[0] == f"warning: {refusal}"
    one_error(lines[1:], "compression.algorithm: " + refusal)
    assert not out.exists()


def test_an_exception_inside_a_plugins_apply_is_exit_3_naming_it(
    install_plugin: Installer, capsys, tmp_path: Path
) -> None:
    install_plugin("crashy-plugin", PLUGIN_CODE, {"crashy": "Crashing"})
    out = tmp_path / "out"
    code, lines = cli(capsys, "prune", plugin_recipe(tmp_path, "crashy"), "--out", out, "--quiet", *QUICK_PRUNE)
    log = out / "robprune-error.log"
    assert code == 3
    assert lines == [
        "error: plugin bug: algorithm 'crashy' (crashy-plugin 1.0) raised ZeroDivisionError: division by zero "
        f"in apply; traceback in {log}"
    ]
    trace = log.read_text()
    assert 'crashy_plugin.py", line' in trace and "1 / 0" in trace  # the plugin's own frame
    assert not (out / "pruned.pt").exists()


@pytest.mark.parametrize(
    ("plugin", "needle"),
    [
        ("WrongMask", "mask 'body.features.0.weight': shape (32,) != parameter (32, 1, 3, 3)"),
        ("BroadcastMask", "mask 'body.features.0.weight': shape (32, 1, 1, 1) != parameter (32, 1, 3, 3)"),
    ],
)
def test_masks_that_do_not_fit_the_model_are_a_plugin_bug(
    plugin: str, needle: str, install_plugin: Installer, capsys, tmp_path: Path
) -> None:
    install_plugin("sloppy-plugin", PLUGIN_CODE, {"sloppy": plugin})
    out = tmp_path / "out"
    code, lines = cli(capsys, "prune", plugin_recipe(tmp_path, "sloppy"), "--out", out, "--quiet", *QUICK_PRUNE)
    assert code == 3
    assert lines == [
        "error: plugin bug: algorithm 'sloppy' (sloppy-plugin 1.0) made masks that do not fit the model in "
        f"apply: {needle}; traceback in {out / 'robprune-error.log'}"
    ]
    assert not (out / "pruned.pt").exists()


def test_a_bad_value_for_a_plugins_option_is_bad_input(install_plugin: Installer, capsys, tmp_path: Path) -> None:
    install_plugin("crashy-plugin", PLUGIN_CODE, {"crashy": "Crashing"})
    out = tmp_path / "out"
    recipe = plugin_recipe(tmp_path, "crashy")
    code, lines = cli(capsys, "run", recipe, "--out", out, *sets("compression.config.seed=-1"))
    assert code == 2
    one_error(lines, f"recipe {recipe}: compression.config.seed", "greater than or equal to 0")
    assert not out.exists()


def test_plugin_code_is_checked_by_the_python_api_too(install_plugin: Installer) -> None:
    import robprune_deploy as rp
    from robprune_deploy.errors import PluginError
    from robprune_deploy.models import build_model

    install_plugin("sloppy-plugin", PLUGIN_CODE, {"sloppy": "BroadcastMask"})
    model = build_model("digits_cnn", 10, 1, [0.5], [0.25])
    batches = [(torch.rand(8, 1, 16, 16), torch.arange(8))]
    with pytest.raises(PluginError, match=r"^plugin bug: algorithm 'sloppy' \(sloppy-plugin 1.0\) made masks"):
        rp.prune(model, "sloppy", batches, ratio=0.5)


def read_only_store(tmp_path: Path) -> tuple[str, Path]:
    """An MLflow-looking SQLite file with no write permission (refused even where root could write)."""
    path = tmp_path / "store" / "mlflow.db"
    path.parent.mkdir()
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE experiments (experiment_id INTEGER PRIMARY KEY)")
    connection.commit()
    connection.close()
    path.chmod(0o444)
    return f"sqlite:///{path}", path


@pytest.mark.parametrize("store", ["read-only file", "read-only folder", "not a database"])
def test_an_unusable_tracking_store_is_refused_before_out_is_created(store: str, capsys, tmp_path: Path) -> None:
    if store == "read-only file":
        uri, path = read_only_store(tmp_path)
        needle = f"{path} is read-only; MLflow cannot record a run in it"
    elif store == "read-only folder":
        folder = tmp_path / "locked"
        folder.mkdir(mode=0o555)
        uri, needle = f"sqlite:///{folder / 'mlflow.db'}", f"the folder {folder} is read-only"
    else:
        path = tmp_path / "notes.db"
        path.write_text("these are notes, not a database\n")
        uri, needle = f"sqlite:///{path}", f"{path} is not a SQLite database"
    out = tmp_path / "out"
    code, lines = cli(capsys, "run", RECIPES / "digits_hydra.yaml", "--out", out, "--tracking-uri", uri)
    assert code == 2
    one_error(lines, f"error: tracking.tracking_uri {uri}: {needle}")
    assert not out.exists()


def allocation_bomb(path: Path, side: int) -> Path:
    """A digits classifier whose logits add the sum of a ``side x side`` ConstantOfShape: 10 kB
    on disk, ``4 * side**2`` bytes at run time (beyond onnxruntime's 1 GB constant folding)."""
    shape = numpy_helper.from_array(np.array([side, side], np.int64), "shape")
    rows = numpy_helper.from_array(np.array([-1, 256], np.int64), "rows_shape")
    weights = numpy_helper.from_array(np.zeros((256, 10), np.float32), "w")
    zero = helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0])
    nodes = [
        helper.make_node("ConstantOfShape", ["shape"], ["zeros"], value=zero, name="bomb"),
        helper.make_node("ReduceSum", ["zeros"], ["total"], keepdims=0),
        helper.make_node("Reshape", ["input", "rows_shape"], ["rows"]),
        helper.make_node("MatMul", ["rows", "w"], ["scores"]),
        helper.make_node("Add", ["scores", "total"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "bomb",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 16, 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        [shape, rows, weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def test_an_allocation_bomb_is_refused_by_the_session_memory_bound(capsys, tmp_path: Path) -> None:
    """The graph asks for 4 TiB: above the schema's largest bound, so whichever bound this process's
    arena got first refuses it before allocating; and far above any machine's memory, so even
    without a bound the allocation would fail rather than fill the memory."""
    bomb = allocation_bomb(tmp_path / "bomb.onnx", 1 << 20)
    assert bomb.stat().st_size < 20_000
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"evaluate": {"num_examples": 20, "square_queries": 0, "providers": ["cpu"]}}))
    report = tmp_path / "report"
    started = time.monotonic()
    code, lines = cli(capsys, "gate", bomb, "--recipe", recipe, "--report", report, "--quiet")
    assert code == 2 and time.monotonic() - started < 60
    one_error(lines, f"error: ONNX file {bomb}: a ConstantOfShape node 'bomb' asked for 4096.0 GiB, more than ")
    assert f"evaluate.max_session_memory_mb ({session_memory_bound()} MiB) allows" in lines[0]
    assert not report.exists()


def test_the_session_memory_bound_is_a_bounded_recipe_field(capsys, tmp_path: Path) -> None:
    code, lines = cli(
        capsys,
        "gate",
        tmp_path / "m.onnx",
        "--recipe",
        RECIPES / "digits_hydra.yaml",
        "--report",
        tmp_path / "r",
        *sets("evaluate.max_session_memory_mb=0"),
    )
    assert code == 2
    one_error(lines, "evaluate.max_session_memory_mb", "greater than or equal to 64")


def test_the_session_memory_bound_does_not_change_the_recipes_fingerprint() -> None:
    from robprune_deploy.pipeline.ownership import recipe_fingerprint
    from robprune_deploy.recipe import validate_recipe

    def fingerprint(evaluate: dict[str, object]) -> str:
        return recipe_fingerprint(validate_recipe({"evaluate": evaluate}))

    assert (
        fingerprint({"max_session_memory_mb": 64}) == fingerprint({}) == fingerprint({"max_session_memory_mb": 65536})
    )
    assert fingerprint({"num_examples": 100}) != fingerprint({})  # what the measurement uses still counts


def test_a_field_added_later_keeps_old_folders_owned_at_its_default_and_counts_once_set() -> None:
    from robprune_deploy.pipeline.ownership import LATER_FIELDS, fingerprint_document, recipe_fingerprint
    from robprune_deploy.recipe import validate_recipe

    default = validate_recipe({})
    document = fingerprint_document(default)
    for section, name in LATER_FIELDS:
        # A folder written before the field existed was fingerprinted without it: the same document.
        assert name not in document[section]
    for evaluate in ({"torch_examples": 50}, {"ensemble_examples": 50}, {"runtimes": ["openvino"]}):
        assert recipe_fingerprint(validate_recipe({"evaluate": evaluate})) != recipe_fingerprint(default)
