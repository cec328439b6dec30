"""Adapter between MLproject parameters and the ``robprune`` CLI.

MLflow passes every parameter, so optional ones arrive as empty strings, and a list of recipe
overrides arrives as one space-separated string. This module turns
``--overrides "a=1 b=2" --checkpoint "" --register ""`` into ``--set a=1 --set b=2`` and drops
the empty options, then calls :func:`robprune_deploy.cli.main.main`.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence

from robprune_deploy.cli.main import main as cli_main

_OPTIONAL = ("--register", "--alias")


def translate(argv: Sequence[str]) -> list[str]:
    args: list[str] = []
    items = list(argv)
    i = 0
    while i < len(items):
        item = items[i]
        value = items[i + 1] if i + 1 < len(items) else ""
        if item == "--overrides":
            for override in shlex.split(value):
                args += ["--set", override]
            i += 2
        elif item == "--checkpoint":
            if value.strip():
                args += ["--set", f"model.checkpoint={value}", "--set", "pretrain.enabled=false"]
            i += 2
        elif item in _OPTIONAL:
            if value.strip():
                args += [item, value]
            i += 2
        else:
            args.append(item)
            i += 1
    return args


def main(argv: Sequence[str] | None = None) -> int:
    return cli_main(translate(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    raise SystemExit(main())
