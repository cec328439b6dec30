"""The examples/ scripts and the code blocks of the README and the docs run, at smoke-test budgets.

Code blocks of README.md and of every page under docs/ carry a marker on the line above them:
``<!-- example: PATH -->`` the block is the whole file PATH (run below, or installed as a package);
``<!-- excerpt: PATH -->`` the block is a contiguous part of PATH, so every line shown is executed;
``<!-- runnable -->`` the block is executed as it stands.
"""

from __future__ import annotations

import json
import re
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from conftest import LIGHT_EVAL, subprocess_env  # type: ignore[import-not-found]

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
BLOCK = re.compile(r"<!-- (example|excerpt|runnable)(?:: (\S+))? -->\n```(\w+)\n(.*?)```", re.DOTALL)


PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def marked_blocks() -> list[tuple[Path, str, str | None, str]]:
    """``(page, kind, path, body)`` of every marked code block of the README and the docs."""
    return [(page, kind, path, body) for page in PAGES for kind, path, _, body in BLOCK.findall(page.read_text())]


def run_example(script: str, *args: str, monkeypatch: pytest.MonkeyPatch) -> int:
    """Run an example in this process (the suite has already paid torch's import) and return its exit code."""
    monkeypatch.setattr(sys, "argv", [script, *args])
    try:
        runpy.run_path(str(EXAMPLES / script), run_name="__main__")
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_marked_blocks_are_the_examples_or_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = marked_blocks()
    assert {kind for _, kind, _, _ in blocks} == {"example", "excerpt", "runnable"}
    assert {page.name for page, _, _, _ in blocks} >= {"README.md", "python-api.md", "write-a-plugin.md"}
    for page, kind, path, body in blocks:
        where = page.relative_to(ROOT)
        if kind == "example":
            assert body == (ROOT / str(path)).read_text(), f"{where}: block differs from {path}"
        elif kind == "excerpt":
            assert body in (ROOT / str(path)).read_text(), f"{where}: block is not a part of {path}"
        else:
            monkeypatch.chdir(tmp_path)
            exec(compile(body, str(where), "exec"), {"__name__": "__readme__"})


def test_api_example_goes_from_a_plain_module_to_a_gated_onnx_file(tmp_path: Path, monkeypatch) -> None:
    quick = ["evaluate.num_examples=100", "evaluate.square_queries=30", "evaluate.latency.repeats=3", *LIGHT_EVAL]
    args = ["--epochs", "1", "--out", str(tmp_path), *(arg for item in quick for arg in ("--set", item))]
    code = run_example("api_from_module.py", *args, monkeypatch=monkeypatch)
    verdict = json.loads((tmp_path / "gate" / "gate.json").read_text())
    assert code == (0 if verdict["passed"] else 1)
    assert verdict["baseline_model"].endswith("dense.onnx")
    candidate = verdict["candidate"]
    # One epoch of training is far from the default budget, but well above chance (0.1) on digits,
    # and the 80% masks of the three convolutions (head dense) are in the ONNX weights.
    assert candidate["clean_acc"] > 0.3
    assert candidate["audit_sparsity"] == pytest.approx(0.8 * 55584 / (55584 + 10240), abs=0.01)


def test_torchvision_example_exports_a_pruned_resnet18_with_the_datas_one_channel_input(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    args = ("--epochs", "1", "--train-examples", "64", "--out", str(tmp_path))
    assert run_example("torchvision_resnet18.py", *args, monkeypatch=monkeypatch) == 0
    out = capsys.readouterr().out
    macs = re.search(r"MACs ([\d,]+) -> ([\d,]+)", out)
    assert macs is not None
    dense, pruned = (int(m.replace(",", "")) for m in macs.groups())
    assert 0.4 < 1 - pruned / dense < 0.6
    graph = onnx.load(str(tmp_path / "model.onnx")).graph
    assert [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim[1:]] == [1, 16, 16]
    stem = next(i for i in graph.initializer if i.name.endswith("conv1.weight"))
    assert list(stem.dims)[1] == 3  # the RGB stem is inside: the gray channel is repeated in the graph


def test_plugin_package_installs_and_runs_end_to_end(tmp_path: Path) -> None:
    """The example plugin is pip-installed (into a folder put on the child's path, leaving the shared
    environment as it was) and `robprune run` finds it through its entry point alone."""
    source = shutil.copytree(EXAMPLES / "plugin_random_pruning", tmp_path / "src")  # the build writes beside it
    site = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index"]
    subprocess.run([*pip, "--target", str(site), str(source)], check=True, capture_output=True, timeout=300)
    out = tmp_path / "out"
    sets = [
        "pretrain.epochs=1",
        "finetune.epochs=1",
        "data.train_subset=256",
        "attack.train_steps=2",
        "attack.eval_steps=5",
        "evaluate.num_examples=64",
        *LIGHT_EVAL,
        "evaluate.square_queries=20",
        "evaluate.square_examples=32",
        "evaluate.latency.repeats=2",
        "evaluate.latency.warmup=0",
        "gate.min_clean_acc=0.2",
        "gate.min_pgd_acc=0",
        "tracking.enabled=false",
    ]
    command = [sys.executable, "-m", "robprune_deploy.cli.main", "run", str(source / "recipe.yaml"), "--out", str(out)]
    command += [arg for item in sets for arg in ("--set", item)]
    import os

    path = os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])])
    proc = subprocess.run(
        command, env=subprocess_env(PYTHONPATH=path), capture_output=True, text=True, timeout=600, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["algorithm"] == "random"
    assert summary["sparsity"] == pytest.approx(0.5, abs=0.005)  # every layer but the ignored head, exactly
    assert summary["onnx.zero_fraction"] > 0.3 and "gate.passed" in summary
