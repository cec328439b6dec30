"""Running the ``robprune`` CLI in-process and reading what it said."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from robprune_deploy.cli.main import main
from robprune_deploy.progress import LINE_PREFIX

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"
_THIRD_PARTY_LOG = re.compile(r"^[WIE]\d{4} ")  # glog-style lines torch prints while importing


def cli(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, list[str]]:
    """``robprune ARGS`` in this process: the exit code and robprune's own stderr lines, less its
    ``progress:`` lines (tests/test_progress.py is about those)."""
    capsys.readouterr()
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    return code, [
        line
        for line in err.splitlines()
        if line.strip() and not _THIRD_PARTY_LOG.match(line) and not line.startswith(LINE_PREFIX)
    ]


def sets(*items: str) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


def one_error(lines: list[str], *needles: str) -> str:
    """The single ``error:`` line, which must contain every needle."""
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert all(n in lines[0] for n in needles), (lines[0], needles)
    return lines[0]


def small_gate(*light_eval: str) -> list[str]:
    """The ``--set`` arguments of a gate at the suite's small budget (60 examples, a few attack
    steps, CPU, tracking off), with the light attack ensemble ``light_eval`` (conftest's LIGHT_EVAL)."""
    return sets(
        "evaluate.num_examples=60",
        "evaluate.square_queries=5",
        "evaluate.square_examples=10",
        "evaluate.latency.repeats=1",
        "evaluate.latency.warmup=0",
        "evaluate.providers=[cpu]",
        "attack.eval_steps=3",
        *light_eval,
        "tracking.enabled=false",
    )
