"""``robprune``: run pipelines, single stages, and the robustness gate.

Exit codes: 0 success (for ``gate``: pass), 1 gate failure, 2 bad input. Bad input is reported as
one ``error: ...`` line on stderr, never as a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from robprune_deploy.cli import commands
from robprune_deploy.errors import RobPruneError
from robprune_deploy.progress import set_quiet

EXIT_BAD_INPUT = 2

Handler = Callable[[argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT)


DESCRIPTION = "Robust pruning as a deployable step: run pipelines, single stages, and the robustness gate."
EPILOG = (
    "exit codes: 0 success (gate: pass), 1 gate failure, 2 bad input (one 'error:' line on stderr).\n"
    "Run 'robprune COMMAND --help' for the options of a command."
)


def build_parser() -> argparse.ArgumentParser:
    # The module docstring is reStructuredText for the API docs; --help gets plain text.
    parser = _Parser(
        prog="robprune", description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for register in commands.REGISTRARS:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    set_quiet(args.quiet)
    handler: Handler = args.handler
    try:
        return handler(args)
    except RobPruneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
