"""Error types of robprune-deploy.

Every failure a user can cause (a bad recipe, a missing dataset root, a checkpoint of another
architecture, a corrupted ONNX file, ...) is raised as a subclass of :class:`RobPruneError` with a
one-line message that names the offending field or file. The CLI turns these into one line on stderr
and exit code 2; anything else is a bug: exit code 3, its traceback kept in a log file.
"""

from __future__ import annotations

import difflib


class RobPruneError(Exception):
    """Base class of every error caused by user input."""


class RecipeError(RobPruneError):
    """A recipe (file or ``--set`` override) is malformed or fails validation."""


class UnknownNameError(RobPruneError, KeyError):
    """A name (algorithm, model, dataset, provider) is not registered.

    :param kind: what was looked up, e.g. ``"algorithm"``.
    :param name: the name asked for.
    :param known: the registered names, listed in the message.
    """

    def __init__(self, kind: str, name: str, known: list[str]) -> None:
        self.kind, self.name, self.known = kind, name, sorted(known)
        close = difflib.get_close_matches(name, self.known, n=1, cutoff=0.6) if isinstance(name, str) else []
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        super().__init__(f"unknown {kind} {name!r}{hint}; known {kind}s: {', '.join(self.known) or '(none)'}")

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class DatasetError(RobPruneError):
    """A dataset root is missing, or its images have the wrong size, channels or values."""


class CheckpointError(RobPruneError):
    """A checkpoint file cannot be read safely or does not fit the model."""


class ShapeError(RobPruneError):
    """A tensor or ONNX input does not have the expected shape."""


class OnnxModelError(RobPruneError):
    """An ONNX file is unreadable, corrupted, or does not match the expected graph."""


class ProviderError(RobPruneError):
    """An onnxruntime execution provider is unknown."""


class PruningError(RobPruneError):
    """A pruning algorithm cannot be applied to the given model or configuration."""


class MaskShapeError(PruningError):
    """A mask (or channel keep-set) does not fit the parameter (or channel group) it names.

    Read from a file it is bad input; made by an algorithm it is a bug of that algorithm, which the
    prune stage reports as a :class:`PluginError`.
    """


class PluginError(Exception):
    """A bug in an algorithm's own code: an exception raised inside it, or masks that do not fit the
    model. Not a :class:`RobPruneError`: the CLI exits 3 and keeps the traceback in its error log.
    The message names the algorithm and the distribution that provides it."""


class TrackingError(RobPruneError):
    """An MLflow store, run or model URI cannot be used."""


class NumericalError(RobPruneError, FloatingPointError):
    """NaN or inf where a finite number is needed: input batches, weights, a training loss.

    The message names the stage and the epoch (or the file) where the value appeared.
    """


class SweepError(RobPruneError):
    """A sweep file (``robprune sweep``) is malformed, or its study cannot be used: the message names
    the file and the field, or the study and its storage."""


class OutputError(RobPruneError):
    """An output folder or file cannot be used: it is a file, not writable, the disk is full, it
    holds another recipe's results, or another process holds its lock."""


class ArgumentError(RobPruneError, TypeError, ValueError):
    """A Python API argument has the wrong type or value (``except TypeError``/``ValueError`` still catch it)."""


class QuantizationError(RobPruneError):
    """INT8 quantization cannot run: no exported model, or a calibration set the data cannot fill."""


class ReleaseError(RobPruneError):
    """A release record, signing key or public key cannot be used: missing, unreadable, or not one."""


# --- text that reaches a terminal ------------------------------------------------------------------
_LINE_BREAKS = frozenset("\u2028\u2029")


def control_character(text: str) -> str | None:
    """The first control character of ``text`` (C0, DEL, C1, or a Unicode line or paragraph
    separator), or None.

    Such a character in a path or name would let it break the one-line ``error:`` message, or
    print a line of its own (``\\nGATE PASSED``), or move the cursor (ESC sequences).
    """
    return next((c for c in text if c < " " or "\x7f" <= c <= "\x9f" or c in _LINE_BREAKS), None)


def printable(text: str) -> str:
    """``text`` with every :func:`control_character` escaped (``\\n``, ``\\x1b``), so it prints as one line."""
    if control_character(text) is None:
        return text
    return "".join(repr(c)[1:-1] if control_character(c) else c for c in text)


class Terminated(KeyboardInterrupt):
    """The process was asked to stop (SIGTERM): handled like Ctrl-C, so that locks are released
    and MLflow runs are ended, not left RUNNING. The message is the signal's name."""


# --- exit codes ------------------------------------------------------------------------------------
# One table, so the documentation (docs/reference/exit-codes.md, generated from it by
# robprune_deploy.reference) and the CLI cannot drift apart: tests/test_docs.py checks that the
# constants the commands return are the codes listed here.
class ExitCode:
    """One exit code of every ``robprune`` command: its number, a short name, the one line ``--help``
    shows and what it means in full (the documentation's)."""

    __slots__ = ("code", "meaning", "name", "summary")

    def __init__(self, code: int, name: str, meaning: str, summary: str) -> None:
        self.code, self.name, self.meaning, self.summary = code, name, meaning, summary

    def __repr__(self) -> str:
        return f"ExitCode({self.code}, {self.name!r})"


EXIT_CODES: tuple[ExitCode, ...] = (
    ExitCode(
        0,
        "done",
        "done; for `gate`, the model passed; for `doctor`, what the recipe asks for is usable",
        "success (gate: the model passed; doctor: usable)",
    ),
    ExitCode(
        1,
        "verdict fail",
        "`gate`: the verdict is fail (also when registering the verdict in MLflow failed afterwards: that is "
        "said on stderr and in `gate.json`); `quantize`: the INT8 gate failed; `doctor`: what the recipe asks "
        "for is not usable; `verify`: a hash or the signature of the release record does not match (the "
        "output names which). No other command returns 1",
        "gate or quantize: the verdict is fail (doctor: not usable; verify: a hash or signature does not match); "
        "no other command returns 1",
    ),
    ExitCode(
        2,
        "bad input",
        "one `error: ...` line naming the field, file or argument. This includes a recipe, checkpoint or ONNX "
        "file that cannot be used, an `--out`/`--report` that is a file, not writable, inside the recipe's "
        "`data.root`, or holds a symbolic link where robprune writes, a name longer than the file system allows, "
        "a control character (newline, CR, ESC, other C0/C1) in an argument or recipe text, NaN/inf or "
        "out-of-range numbers, a non-finite training loss (naming stage and epoch), a corrupt image (naming it), "
        "a full disk, a tracking server that does not answer, a tracking store that is read-only or not an "
        "MLflow database, an ONNX graph that fails under onnxruntime or asks for more memory than "
        "`evaluate.max_session_memory_mb`, and a folder that belongs to another recipe or is held by another "
        "process",
        "bad input: one 'error:' line on stderr naming the field, file or argument",
    ),
    ExitCode(
        3,
        "internal error",
        "a bug here or in a plugin: one line on stderr names the log file that keeps the traceback, "
        "`robprune-error.log` in `--out`/`--report` when it exists (written atomically, never through a link), "
        "else a temporary file; when no log can be written the line says so, and the code is still 3; a "
        "plugin's bug starts `error: plugin bug: algorithm 'NAME' (DISTRIBUTION VERSION)`",
        "internal error: one line on stderr naming the log file with the traceback",
    ),
    ExitCode(
        130,
        "interrupted",
        "interrupted (Ctrl-C). `run` and the stage commands print the exact command that continues: the same "
        "arguments with `--resume` (and without `--force`)",
        "interrupted (Ctrl-C): run and the stage commands print the command that resumes",
    ),
    ExitCode(
        143,
        "terminated",
        "terminated (SIGTERM), handled like Ctrl-C: locks are released and the MLflow runs end KILLED, none is "
        "left RUNNING, and the command that continues is printed",
        "terminated (SIGTERM), handled like Ctrl-C",
    ),
)
"""Every code a ``robprune`` command returns; the error handling itself cannot fail, so there is no other."""
