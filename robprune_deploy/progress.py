"""What a running command shows: bars on a terminal, plain lines on stderr everywhere.

Two kinds of output, both silenced by ``--quiet`` (:func:`set_quiet`):

- Rich progress bars, on a terminal only (stderr is a TTY). They are transient: once a stage is
  done its bar is gone.
- Plain lines on stderr, on a terminal and in CI logs alike, so that a long run is never silent
  and leaves a record: one when a stage starts, one per training epoch with its key figures and
  time, and one when the stage ends, with its time and summary figures::

      progress: pretrain: started
      progress: pretrain: epoch 3/20: loss 1.204, train_adv_acc 0.412 (2.1 s, 6.5 s in the stage)
      progress: pretrain: done in 41.3 s (20 epochs): torch.dense_clean_acc 0.951, torch.dense_pgd_acc 0.640

Every line starts with :data:`LINE_PREFIX`, so a log reader (or a test) can tell them from the
``error:`` and ``warning:`` lines.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from robprune_deploy.termination import raise_if_terminated

LINE_PREFIX = "progress: "
KEY_FIGURES = (
    "loss",
    "robust_loss",
    "train_adv_acc",
    "val_clean_acc",
    "val_pgd_acc",
    "sparsity",
    "lr",
)
"""Per-epoch metrics shown first, in this order (others fill up to :data:`MAX_FIGURES`)."""
MAX_FIGURES = 5

_QUIET = False


def set_quiet(quiet: bool) -> None:
    """Silence every progress bar and progress line of this process (the CLI's ``--quiet``)."""
    global _QUIET
    _QUIET = quiet


def progress_enabled(requested: bool = True) -> bool:
    """Bars (and terminal-only notes): asked for, not ``--quiet``, and stderr is a terminal."""
    return requested and not _QUIET and sys.stderr.isatty()


def lines_enabled(requested: bool = True) -> bool:
    """Plain progress lines: asked for and not ``--quiet``, whatever stderr is."""
    return requested and not _QUIET


def _say(text: str) -> None:
    with contextlib.suppress(OSError, ValueError):  # a closed or broken stderr does not stop the run
        print(f"{LINE_PREFIX}{text}", file=sys.stderr, flush=True)


def _figure(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int) or (math.isfinite(value) and value.is_integer() and abs(value) >= 1):
        return f"{int(value):,}"  # counts logged as floats (mask flips) read as counts
    return f"{value:.3g}" if math.isfinite(value) and abs(value) < 1e-3 and value != 0 else f"{value:.3f}"


def key_figures(metrics: Mapping[str, Any], limit: int = MAX_FIGURES) -> str:
    """``name value`` pairs of the most telling metrics: :data:`KEY_FIGURES` first, then the others
    in their order (per-layer ones, named with a ``/``, are left out)."""
    chosen = [k for k in KEY_FIGURES if k in metrics]
    chosen += [k for k in metrics if k not in chosen and "/" not in k]
    return ", ".join(f"{k} {_figure(metrics[k])}" for k in chosen[:limit])


def _seconds(value: float) -> str:
    return f"{value:.1f} s" if value < 600 else f"{value / 60:.1f} min"


@dataclass
class StageLines:
    """The plain lines of one stage (a no-op when disabled); see the module's text."""

    name: str
    enabled: bool
    epochs: int | None = None
    figures: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    _last: float = 0.0
    _epochs_done: int = 0

    def epoch(self, epoch: int, metrics: Mapping[str, Any]) -> None:
        """One line for a finished epoch (``epoch`` counts from 0, shown from 1)."""
        now = time.monotonic()
        last, self._last = self._last or self.started, now
        self._epochs_done += 1
        if not self.enabled:
            return
        total = f"/{self.epochs}" if self.epochs else ""
        figures = key_figures(metrics)
        _say(
            f"{self.name}: epoch {epoch + 1}{total}{': ' + figures if figures else ''} "
            f"({_seconds(now - last)}, {_seconds(now - self.started)} in the stage)"
        )

    def note(self, figures: Mapping[str, Any]) -> None:
        """Figures for the stage's closing line."""
        self.figures.update(figures)

    def _done(self) -> None:
        if not self.enabled:
            return
        count = self._epochs_done
        epochs = f" ({count} epoch{'s' if count > 1 else ''})" if count else ""
        figures = f": {key_figures(self.figures, limit=8)}" if self.figures else ""
        _say(f"{self.name}: done in {_seconds(time.monotonic() - self.started)}{epochs}{figures}")


@contextlib.contextmanager
def stage_lines(name: str, enabled: bool = True, epochs: int | None = None) -> Iterator[StageLines]:
    """Say when stage ``name`` starts and ends (and, through the object yielded, each epoch)."""
    lines = StageLines(name, lines_enabled(enabled), epochs)
    if lines.enabled:
        _say(f"{name}: started")
    try:
        yield lines
    except BaseException as exc:
        if lines.enabled:
            why = "interrupted" if isinstance(exc, KeyboardInterrupt) else "stopped by an error"
            _say(f"{name}: {why} after {_seconds(time.monotonic() - lines.started)}")
        raise
    lines._done()


def restored(name: str, enabled: bool = True) -> None:
    """One line for a stage completed earlier, whose results are read from the output folder instead
    (``--resume``, or a stage command reusing the stages before it)."""
    if lines_enabled(enabled):
        _say(f"{name}: completed earlier, its results are read from the output folder")


class ProgressBar:
    """What `progress_bar` yields: `advance()` moves the bar (and raises a pending SIGTERM)."""

    def __init__(self, progress: Any | None, task: int | None) -> None:
        self._progress, self._task = progress, task

    def advance(self, steps: int = 1, **fields: object) -> None:
        raise_if_terminated()  # a SIGTERM swallowed by a finalizer is raised at the next step
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, advance=steps, **fields)


@contextlib.contextmanager
def progress_bar(description: str, total: int | None, enabled: bool = True) -> Iterator[ProgressBar]:
    """A context manager yielding an object with ``advance()``; a no-op when disabled."""
    if not progress_enabled(enabled):
        yield ProgressBar(None, None)
        return
    # Imported here: commands that show no bar (``--help``, a CI run) do not load rich's renderer.
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    # On stderr, the terminal the check above is about: stdout may be a file (`run --json > x`).
    with Progress(*columns, transient=True, console=Console(stderr=True)) as progress:
        task = progress.add_task(description, total=total, status="")
        yield ProgressBar(progress, task)
