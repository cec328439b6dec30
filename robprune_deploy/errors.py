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


class OutputError(RobPruneError):
    """An output folder or file cannot be used: it is a file, not writable, the disk is full, it
    holds another recipe's results, or another process holds its lock."""


class ArgumentError(RobPruneError, TypeError, ValueError):
    """A Python API argument has the wrong type or value (``except TypeError``/``ValueError`` still catch it)."""


class QuantizationError(RobPruneError):
    """INT8 quantization cannot run: no exported model, or a calibration set the data cannot fill."""


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
