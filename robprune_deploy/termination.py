"""A SIGTERM that must not be lost.

The CLI turns SIGTERM into :class:`~robprune_deploy.errors.Terminated` raised wherever the main
thread is. When that happens inside a finalizer or a weakref callback (matplotlib's, during the
garbage collection of a plot), Python prints the exception and drops it, and the command would run
on as if nothing was asked. So the request is also noted here, and raised again at the next
checkpoint (a progress step, the gate's registration) until the CLI has handled it.
"""

from __future__ import annotations

from robprune_deploy.errors import Terminated

_pending: list[str] = []


def note_termination(signal_name: str) -> None:
    """Record that the process was asked to stop (called by the signal handler)."""
    _pending[:] = [signal_name]


def pending_termination() -> str | None:
    """The signal's name while a termination has not been handled yet, else None."""
    return _pending[0] if _pending else None


def raise_if_terminated() -> None:
    """:raises Terminated: when a termination was asked for and has not been handled yet."""
    if _pending:
        raise Terminated(_pending[0])


def clear_termination() -> None:
    """The CLI handled the termination (or starts a new command)."""
    _pending.clear()
