"""The ``robprune`` argument parser, built without importing torch, MLflow or onnxruntime.

``robprune --help`` (and every ``robprune COMMAND --help``) must answer at once: a subcommand names
its handler as ``"module:function"``, and :func:`load_handler` imports that module only when the
command runs. The handlers live in :mod:`~robprune_deploy.cli.commands`,
:mod:`~robprune_deploy.cli.deploy_commands`, :mod:`~robprune_deploy.cli.doctor_command` and
:mod:`~robprune_deploy.cli.sweep_command`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from robprune_deploy.errors import EXIT_CODES as ALL_EXIT_CODES

EXIT_BAD_INPUT = 2

Handler = Callable[[argparse.Namespace], int]

DESCRIPTION = "Robust pruning as a deployable step: run pipelines, single stages, and the robustness gate."
EXIT_CODES = "exit codes (every command):\n" + "\n".join(f"  {c.code:<4} {c.summary}" for c in ALL_EXIT_CODES)
EPILOG = EXIT_CODES + "\n\nRun 'robprune COMMAND --help' for the options of a command."
QUIET_HELP = "no progress output (neither bars on a terminal nor the per-stage and per-epoch lines on stderr)"

_COMMANDS = "robprune_deploy.cli.commands"
_DEPLOY = "robprune_deploy.cli.deploy_commands"
_DOCTOR = "robprune_deploy.cli.doctor_command"
_SWEEP = "robprune_deploy.cli.sweep_command"
_VERIFY = "robprune_deploy.cli.verify_command"
SIGN_KEY_HELP = "Ed25519 private key (unencrypted PEM) that signs release.json"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT)


def load_handler(spec: str) -> Handler:
    """The handler named ``"module:function"``, imported now (the command is about to run)."""
    module, _, name = spec.partition(":")
    handler: Handler = getattr(importlib.import_module(module), name)
    return handler


def _command(sub: Any, name: str, text: str, handler: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        name, help=text, description=text, epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.set_defaults(handler=handler)
    return parser


def add_set_argument(parser: argparse.ArgumentParser) -> None:
    """``--set KEY.PATH=VALUE`` (repeatable) into ``overrides``."""
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override a recipe field (repeatable), validated like the file",
    )


def add_recipe_arguments(parser: argparse.ArgumentParser, *, recipe_flag: bool = False) -> None:
    if recipe_flag:
        parser.add_argument("--recipe", required=True, type=Path, help="recipe YAML file")
    else:
        parser.add_argument("recipe", type=Path, help="recipe YAML file")
    add_set_argument(parser)


def add_quiet_argument(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS: given before the command (`robprune --quiet run ...`) it is not reset by the subparser.
    parser.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS, help=QUIET_HELP)


def add_stage_parser(sub: Any, name: str, handler: str, text: str) -> argparse.ArgumentParser:
    """A subcommand that runs pipeline stages of ``RECIPE`` into ``--out`` (``run`` and each stage)."""
    p = _command(sub, name, text, handler)
    add_recipe_arguments(p)
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument(
        "--tracking-uri", default=None, help="MLflow tracking URI (default: MLFLOW_TRACKING_URI or sqlite:///mlflow.db)"
    )
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument(
        "--force",
        action="store_true",
        help="--out holds another recipe's results: delete its stage files (only robprune's) and start over",
    )
    add_quiet_argument(p)
    return p


def _add_run(sub: Any) -> None:
    p = add_stage_parser(
        sub,
        "run",
        f"{_COMMANDS}:handle_run",
        "run the whole pipeline of a recipe; ends with a short summary on stdout and the gate's verdict on stderr",
    )
    p.add_argument(
        "--json", action="store_true", help="print summary.json's contents on stdout instead of the short summary"
    )
    p.add_argument("--sign-key", type=Path, default=None, metavar="PEM", help=SIGN_KEY_HELP)


def _add_stages(sub: Any) -> None:
    for name, text in (
        ("pretrain", "adversarial pretraining only (or load model.checkpoint); writes pretrained.pt"),
        ("prune", "pretrain (or load model.checkpoint) and run the mask search; writes pruned.pt"),
        ("finetune", "adversarial fine-tuning of --out/pruned.pt; writes finetuned.pt"),
        ("export", "export model.onnx and dense.onnx from the stages in --out, with the graph audit"),
        ("evaluate", "robustness under onnxruntime and dense vs pruned latency of --out/model.onnx"),
        (
            "quantize",
            "INT8 model.int8.onnx of --out/model.onnx with nncf.quantize, evaluated, gated (exit 1 on a failed "
            "INT8 gate), logged and registered like FP32",
        ),
    ):
        module = _COMMANDS if name in ("pretrain", "prune", "finetune") else _DEPLOY
        add_stage_parser(sub, name, f"{module}:handle_{name}", text)


def _add_algorithms(sub: Any) -> None:
    _command(sub, "algorithms", "list the registered algorithms", f"{_COMMANDS}:handle_algorithms")


def _add_gate(sub: Any) -> None:
    p = _command(
        sub,
        "gate",
        "robustness gate on an ONNX file or MLflow model URI (exit 0 pass, 1 fail, 2 bad input, 3 internal error)",
        f"{_DEPLOY}:handle_gate",
    )
    p.add_argument("model", help="ONNX file, models:/name/version, models:/name@alias or runs:/id/path")
    add_recipe_arguments(p, recipe_flag=True)
    p.add_argument("--report", required=True, type=Path, help="folder for gate.json, gate.md, gate.png")
    p.add_argument(
        "--precision",
        choices=("fp32", "int8"),
        default=None,
        help="what MODEL is (default: the recipe's gate.precision, fp32); int8 is gated against its FP32 model",
    )
    p.add_argument("--register", default=None, metavar="NAME", help="registered model to tag (and alias on pass)")
    p.add_argument("--alias", default=None, help="alias set on the version only when the gate passes")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI")
    p.add_argument("--sign-key", type=Path, default=None, metavar="PEM", help=SIGN_KEY_HELP)
    add_quiet_argument(p)


def _add_verify(sub: Any) -> None:
    p = _command(
        sub,
        "verify",
        "check a gate's release.json against MODEL: the model's, recipe's and signature's hashes (exit 0 all "
        "match, 1 one does not, naming which, 2 bad input)",
        f"{_VERIFY}:handle_verify",
    )
    p.add_argument("record", type=Path, help="release.json written by `robprune gate`")
    p.add_argument("model", type=Path, help="the ONNX file released")
    p.add_argument("--public-key", type=Path, default=None, metavar="PEM", help="Ed25519 public key of the signer")
    p.add_argument("--recipe", type=Path, default=None, help="recipe YAML file the gate was given, to check its hash")
    add_set_argument(p)
    p.add_argument(
        "--remeasure",
        action="store_true",
        help="measure MODEL again under the recorded recipe; each accuracy must lie in its recorded 95%% interval",
    )
    add_quiet_argument(p)


def _add_doctor(sub: Any) -> None:
    p = _command(
        sub,
        "doctor",
        "check packages, GPUs, onnxruntime providers and the tracking store (exit 0 usable, 1 not)",
        f"{_DOCTOR}:handle_doctor",
    )
    p.add_argument("--recipe", type=Path, default=None, help="recipe to check (default: the default recipe)")
    add_set_argument(p)
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI to check instead of the recipe's")
    p.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the tracking store (default 3)")
    p.add_argument("--json", action="store_true", help="print the findings as JSON")


def _add_sweep(sub: Any) -> None:
    p = _command(
        sub,
        "sweep",
        "run a recipe's trials (a grid, or a sampler) on an Optuna study, each one `robprune run`; rerun the "
        "command to resume, start it again (here or on another machine) to share the trials",
        f"{_SWEEP}:handle_sweep",
    )
    p.add_argument("sweep", type=Path, help="sweep YAML file: base recipe, search space, objective, storage")
    p.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI of every trial (default: the recipe's, MLFLOW_TRACKING_URI or sqlite:///mlflow.db)",
    )
    add_quiet_argument(p)


def build_parser() -> argparse.ArgumentParser:
    # The module docstrings are reStructuredText for the API docs; --help gets plain text.
    parser = _Parser(
        prog="robprune", description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quiet", action="store_true", help=QUIET_HELP)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for add in (_add_run, _add_algorithms, _add_stages, _add_gate, _add_verify, _add_doctor, _add_sweep):
        add(sub)
    return parser
