"""`robprune --help` is fast and complete; messages tell a newcomer what to do next.

- ``--help`` (of the command and of every subcommand) imports no torch, MLflow or onnxruntime;
- every exit code the command can return is listed;
- an interrupted run prints the exact command that resumes it;
- a recipe with several mistakes gets all of them in its one error line, with "did you mean".
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from clitools import cli  # type: ignore[import-not-found]
from conftest import subprocess_env  # type: ignore[import-not-found]

from robprune_deploy.cli.main import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_TERMINATED, resume_command
from robprune_deploy.cli.parser import EXIT_BAD_INPUT, build_parser

HEAVY = ("torch", "mlflow", "onnxruntime", "onnx", "nncf", "matplotlib", "torchvision", "timm")
# A child that asks for the help and reports what got imported (its stdout carries the help text).
_PROBE = """
import json, sys
from robprune_deploy.cli.main import main
try:
    main(sys.argv[1:])
except SystemExit as exit:
    code = exit.code
heavy = sorted(m for m in {heavy!r} if m in sys.modules)
print(json.dumps({{"code": code, "heavy": heavy}}), file=sys.stderr)
"""


def _help(*args: str) -> tuple[str, dict[str, object], float]:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _PROBE.format(heavy=HEAVY), *args],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.stdout, json.loads(done.stderr.strip().splitlines()[-1]), time.perf_counter() - start


@pytest.mark.parametrize(
    "args", [("--help",), ("run", "--help"), ("gate", "--help"), ("verify", "--help"), ("doctor", "--help")]
)
def test_help_imports_no_torch_mlflow_or_onnxruntime(args: tuple[str, ...]) -> None:
    text, probe, seconds = _help(*args)
    assert probe == {"code": 0, "heavy": []}, probe
    assert text.startswith("usage: robprune")
    assert seconds < 30  # the whole child; with torch it took 5 s of CPU, without it a fraction of one


def test_the_console_script_answers_help_the_same_way() -> None:
    script = Path(sys.executable).parent / "robprune"
    if not script.is_file():
        pytest.skip("robprune console script not installed in this environment")
    done = subprocess.run(
        [sys.executable, "-X", "importtime", str(script), "--help"],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if "|" in line}
    assert not imported & {"torch", "mlflow", "onnxruntime"}, sorted(imported & set(HEAVY))


@pytest.mark.parametrize("args", [("--help",), ("run", "--help"), ("gate", "--help"), ("prune", "--help")])
def test_help_lists_every_exit_code(args: tuple[str, ...]) -> None:
    text, _, _ = _help(*args)
    codes = text.split("exit codes", 1)[1]
    for code in (0, 1, EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_TERMINATED):
        assert f"\n  {code} " in codes, (code, codes)
    assert (EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_TERMINATED) == (2, 3, 130, 143)


def test_every_subcommand_names_a_handler_that_exists() -> None:
    """The parser names handlers by string (it imports nothing heavy): each must resolve."""
    from robprune_deploy.cli.parser import load_handler

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, subparser in sub.choices.items():  # type: ignore[union-attr]
        assert callable(load_handler(subparser.get_default("handler"))), name


def test_the_resume_command_is_the_same_command_with_resume() -> None:
    argv = ["run", "recipes/digits_s2ap.yaml", "--out", "runs/my run", "--set", "pretrain.epochs=2"]
    assert resume_command(argv) == (
        "robprune run recipes/digits_s2ap.yaml --out 'runs/my run' --set pretrain.epochs=2 --resume"
    )
    assert shlex.split(resume_command(argv))[1:] == [*argv, "--resume"]  # pasted into a shell, it is argv again
    assert resume_command([*argv, "--force"]) == resume_command(argv)  # --force and --resume exclude each other
    assert resume_command([*argv, "--resume"]) == resume_command(argv)


def _recipe(tmp_path: Path, document: dict[str, object]) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def test_a_recipe_with_several_mistakes_gets_them_all_in_one_line(tmp_path: Path, capsys) -> None:
    recipe = _recipe(
        tmp_path,
        {
            "pretrain": {"epocs": 3, "lr": -1},
            "atack": {"eps": 0.1},
            "compression": {"algorithm": "s2ap", "config": {"gama": 0.1}},
        },
    )
    code, lines = cli(capsys, "run", recipe, "--out", tmp_path / "out", "--quiet")
    assert code == 2
    assert lines == [
        f"error: recipe {recipe}: 4 problems: pretrain.lr: Input should be greater than 0 (got -1); "
        "pretrain.epocs: unknown field (did you mean 'epochs'?); atack: unknown field (did you mean 'attack'?); "
        "compression.config.gama: unknown field (did you mean 'gamma'?)"
    ]
    assert "more)" not in lines[0] and not (tmp_path / "out").exists()


def test_a_misspelled_override_and_algorithm_get_did_you_mean(tmp_path: Path, capsys) -> None:
    recipe = _recipe(tmp_path, {"compression": {"algorithm": "s2ap"}})
    code, lines = cli(capsys, "run", recipe, "--out", tmp_path / "out", "--set", "evaluate.latency.batchsize=8")
    assert code == 2
    assert lines[0].endswith("evaluate.latency.batchsize: unknown field (did you mean 'batch'?)"), lines
    code, lines = cli(capsys, "run", recipe, "--out", tmp_path / "out", "--set", "compression.algorithm=hidra")
    assert code == 2
    assert "compression.algorithm: unknown algorithm 'hidra' (did you mean 'hydra'?); known algorithms:" in lines[0]
    # no close name, no guess
    code, lines = cli(capsys, "run", recipe, "--out", tmp_path / "out", "--set", "pretrain.zzzzzz=1")
    assert code == 2 and lines[0].endswith("pretrain.zzzzzz: unknown field"), lines
