"""Rich progress bars that stay quiet when output is not a terminal or ``--quiet`` is given."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from robprune_deploy.termination import raise_if_terminated

_QUIET = False


def set_quiet(quiet: bool) -> None:
    """Silence every progress bar of this process (the CLI's ``--quiet``)."""
    global _QUIET
    _QUIET = quiet


def progress_enabled(requested: bool = True) -> bool:
    return requested and not _QUIET and sys.stderr.isatty()


class _Bar:
    def __init__(self, progress: Progress | None, task: int | None) -> None:
        self._progress, self._task = progress, task

    def advance(self, steps: int = 1, **fields: object) -> None:
        raise_if_terminated()  # a SIGTERM swallowed by a finalizer is raised at the next step
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, advance=steps, **fields)  # type: ignore[arg-type]


@contextlib.contextmanager
def progress_bar(description: str, total: int | None, enabled: bool = True) -> Iterator[_Bar]:
    """A context manager yielding an object with ``advance()``; a no-op when disabled."""
    if not progress_enabled(enabled):
        yield _Bar(None, None)
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=True) as progress:
        task = progress.add_task(description, total=total, status="")
        yield _Bar(progress, task)
