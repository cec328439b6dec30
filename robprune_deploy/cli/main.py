"""``robprune``: run pipelines, single stages, and the robustness gate.

Exit codes: 0 success (for ``gate``: pass), 1 the gate's verdict is fail, 2 bad input, 3 internal
error. Bad input is reported as one ``error: ...`` line on stderr, never as a traceback; an internal
error prints one line naming the log file that keeps its traceback.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from robprune_deploy.atomic import storage_problem
from robprune_deploy.cli import commands
from robprune_deploy.errors import PluginError, RobPruneError
from robprune_deploy.pipeline.ownership import ERROR_LOG
from robprune_deploy.progress import set_quiet

EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 3
MAX_MESSAGE = 600

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


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` as one bounded line.

    An error raised in a DataLoader worker comes back as ``Caught X in DataLoader worker ...``
    followed by the worker's traceback; its last line is the original message.
    """
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    text = lines[0]
    if len(lines) > 1 and text.startswith("Caught "):
        last = lines[-1]
        text = last.split(": ", 1)[1] if ": " in last and last.split(": ", 1)[0].endswith("Error") else last
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


def _log_folder(args: argparse.Namespace) -> Path | None:
    """The report or output folder of the command, when it exists and can take the log."""
    for name in ("report", "out"):
        folder = getattr(args, name, None)
        if isinstance(folder, Path) and folder.is_dir() and os.access(folder, os.W_OK):
            return folder
    return None


def write_error_log(args: argparse.Namespace | None) -> Path | None:
    """Write the current exception's traceback beside the command's results (else in a temp file)."""
    text = (
        f"robprune {' '.join(sys.argv[1:])}\n{datetime.datetime.now().isoformat(timespec='seconds')}\n\n"
        + traceback.format_exc()
    )
    folder = _log_folder(args) if args is not None else None
    try:
        if folder is not None:
            path = folder / ERROR_LOG
            path.write_text(text, encoding="utf-8")
            return path
    except OSError:
        pass
    try:
        fd, name = tempfile.mkstemp(prefix="robprune-error-", suffix=".log")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        return Path(name)
    except OSError:
        return None


def _nul_argument(argv: Sequence[str]) -> str | None:
    return next((arg for arg in argv if "\x00" in arg), None)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    bad = _nul_argument(argv)
    if bad is not None:
        print(f"error: argument {bad!r}: contains a NUL character", file=sys.stderr)
        return EXIT_BAD_INPUT
    parser = build_parser()
    args = parser.parse_args(argv)
    set_quiet(args.quiet)
    handler: Handler = args.handler
    try:
        return handler(args)
    except RobPruneError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        problem = storage_problem(exc)
        if problem is not None:  # a full disk or a read-only folder outside the atomic writes
            where = getattr(exc, "filename", None)
            print(f"error: {where or 'output'}: {problem}", file=sys.stderr)
            return EXIT_BAD_INPUT
        log = write_error_log(args)
        kept = f"traceback in {log}" if log is not None else "no log could be written"
        if isinstance(exc, PluginError):  # its message names the algorithm and its distribution
            print(f"error: {one_line(exc)}; {kept}", file=sys.stderr)
        else:
            print(f"error: internal error ({type(exc).__name__}: {one_line(exc)}); {kept}", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    raise SystemExit(main())
