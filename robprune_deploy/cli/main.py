"""``robprune``: run pipelines, single stages, and the robustness gate.

Exit codes: 0 success (for ``gate``: pass), 1 the gate's verdict is fail, 2 bad input, 3 internal
error, 130 interrupted (Ctrl-C), 143 terminated (SIGTERM). Bad input is reported as one
``error: ...`` line on stderr, never as a traceback; an internal error prints one line naming the
log file that keeps its traceback. The handler of errors cannot fail itself: whatever goes wrong
while reporting, the command still prints one line and never exits 1, the code of a failed gate.
Every message is printed with control characters escaped, and arguments holding one are refused,
so no path or name can print a line of its own (a forged ``gate PASSED``).

SIGTERM is handled like Ctrl-C: it raises :class:`~robprune_deploy.errors.Terminated` (a
``KeyboardInterrupt``), so locks are released and MLflow runs end KILLED, never left RUNNING.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import errno
import os
import shlex
import signal
import sys
import tempfile
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType

from robprune_deploy.atomic import storage_problem
from robprune_deploy.cli.parser import EXIT_BAD_INPUT, Handler, build_parser, load_handler
from robprune_deploy.errors import PluginError, RobPruneError, Terminated, control_character, printable
from robprune_deploy.pipeline.ownership import ERROR_LOG
from robprune_deploy.progress import set_quiet
from robprune_deploy.termination import clear_termination, note_termination, pending_termination

EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 128 + signal.SIGTERM
BAD_PATH_ERRNOS = frozenset({errno.ENAMETOOLONG, errno.ELOOP})
"""``errno`` values that mean "this path given by the user cannot name a file", not a bug."""
MAX_MESSAGE = 600


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` as one bounded line.

    An error raised in a DataLoader worker comes back as ``Caught X in DataLoader worker ...``
    followed by the worker's traceback; its last line is the original message. Control characters
    are escaped, so a name holding ``\\r`` or ESC cannot rewrite the line a terminal shows.
    """
    # Split at newlines only: any other line break (CR, NEL, U+2028) in a name is escaped below.
    lines = [line.strip() for line in str(exc).split("\n") if line.strip()]
    if not lines:
        return type(exc).__name__
    text = lines[0]
    if len(lines) > 1 and text.startswith("Caught "):
        last = lines[-1]
        text = last.split(": ", 1)[1] if ": " in last and last.split(": ", 1)[0].endswith("Error") else last
    text = printable(text)
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


def _log_folder(args: argparse.Namespace) -> Path | None:
    """The report or output folder of the command, when it exists and can take the log (never
    through a link named like the log: what it points to is not ours)."""
    for name in ("report", "out"):
        folder = getattr(args, name, None)
        try:
            if (
                isinstance(folder, Path)
                and folder.is_dir()
                and os.access(folder, os.W_OK)
                and not (folder / ERROR_LOG).is_symlink()
            ):
                return folder
        except (OSError, ValueError):  # a name too long, a NUL: no log there
            continue
    return None


def _write_log_atomically(folder: Path, text: str) -> Path:
    """A new file replaces the old log (or a link of that name) at once; nothing is written through a link."""
    fd, name = tempfile.mkstemp(prefix=f".{ERROR_LOG}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        path = folder / ERROR_LOG
        os.replace(name, path)
        return path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(name)


def write_error_log(args: argparse.Namespace | None) -> Path | None:
    """Write the current exception's traceback beside the command's results (else in a temp file).

    Never raises: a folder that cannot take the log falls back to a temporary file, and when that
    fails too the answer is None.
    """
    try:
        text = (
            f"robprune {' '.join(sys.argv[1:])}\n{datetime.datetime.now().isoformat(timespec='seconds')}\n\n"
            + traceback.format_exc()
        )
        folder = _log_folder(args) if args is not None else None
    except Exception:
        return None
    if folder is not None:
        with contextlib.suppress(OSError):
            return _write_log_atomically(folder, text)
    try:
        fd, name = tempfile.mkstemp(prefix="robprune-error-", suffix=".log")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        return Path(name)
    except (OSError, ValueError):
        return None


def _bad_argument(argv: Sequence[str]) -> str | None:
    """The message for an argument holding a NUL or a control character, or None."""
    for arg in argv:
        if "\x00" in arg:
            return f"argument {arg!r}: contains a NUL character"
        bad = control_character(arg)
        if bad is not None:
            return f"argument {printable(repr(arg))}: contains a control character ({bad!r})"
    return None


def _say(line: str) -> None:
    """Print one line on stderr; a closed or broken stderr does not turn into another error."""
    with contextlib.suppress(Exception):
        print(f"error: {printable(line)}", file=sys.stderr, flush=True)


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    # Once: the cleanup that follows (locks, MLflow runs ended KILLED) must not be cut short by a
    # second SIGTERM; SIGKILL still ends the process at once.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    name = signal.Signals(signum).name
    note_termination(name)  # raised again later if a finalizer swallows this one (termination.py)
    raise Terminated(name)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises :class:`Terminated` while the command runs; the previous handler is restored."""
    try:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread: signals cannot be handled here
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def resume_command(argv: Sequence[str]) -> str:
    """The command that continues an interrupted ``argv``: the same arguments with ``--resume``
    (and without ``--force``, which starts over and cannot be combined with it)."""
    tokens = [arg for arg in argv if arg != "--force"]
    if "--resume" not in tokens:
        tokens.append("--resume")
    return shlex.join(["robprune", *tokens])


def _interrupted(exc: KeyboardInterrupt, args: argparse.Namespace | None, argv: Sequence[str]) -> int:
    what = f"terminated by {exc}" if isinstance(exc, Terminated) else "interrupted"
    out = getattr(args, "out", None)
    if isinstance(out, Path) and hasattr(args, "resume"):
        what += f"; the completed stages are kept in {out}; to continue: {resume_command(argv)}"
    register = getattr(args, "register", None)
    if register:
        what += f"; the registration as {register!r} may not have finished"
    _say(what)
    return EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED


def _run_handler(args: argparse.Namespace) -> int:
    try:
        handler: Handler = load_handler(args.handler)  # the command's modules (torch, ...) load here
        return handler(args)
    except RobPruneError as exc:
        _say(one_line(exc))
        return EXIT_BAD_INPUT
    except Exception as exc:
        problem = storage_problem(exc)
        if problem is not None:  # a full disk or a read-only folder outside the atomic writes
            where = getattr(exc, "filename", None)
            _say(f"{where or 'output'}: {problem}")
            return EXIT_BAD_INPUT
        if isinstance(exc, OSError) and exc.errno in BAD_PATH_ERRNOS:  # a path given that cannot name a file
            where = str(getattr(exc, "filename", None) or "a path")
            _say(f"{where[:120] + '...' if len(where) > 120 else where}: {exc.strerror}")
            return EXIT_BAD_INPUT
        log = write_error_log(args)
        kept = f"traceback in {log}" if log is not None else "no log could be written"
        if isinstance(exc, PluginError):  # its message names the algorithm and its distribution
            _say(f"{one_line(exc)}; {kept}")
        else:
            _say(f"internal error ({type(exc).__name__}: {one_line(exc)}); {kept}")
        return EXIT_INTERNAL


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    bad = _bad_argument(argv)
    if bad is not None:
        _say(bad)
        return EXIT_BAD_INPUT
    args: argparse.Namespace | None = None
    with _sigterm_as_interrupt():
        try:
            args = build_parser().parse_args(argv)
            set_quiet(args.quiet)
            code = _run_handler(args)
            pending = pending_termination()
            if pending is not None:  # asked to stop, but the exception was lost on the way
                raise Terminated(pending)
            return code
        except KeyboardInterrupt as exc:
            clear_termination()
            return _interrupted(exc, args, argv)
        except Exception as exc:  # the error handling itself failed: still one line, still not 1
            with contextlib.suppress(Exception):
                _say(f"internal error while reporting an error ({type(exc).__name__}: {one_line(exc)})")
            return EXIT_INTERNAL


if __name__ == "__main__":
    raise SystemExit(main())
