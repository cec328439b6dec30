"""An algorithm's own code runs under a guard that tells its bugs from bad input.

A :class:`~robprune_deploy.errors.RobPruneError` raised inside an algorithm (bad data, a model it cannot
prune, a missed ratio) stays what it is: bad input, exit 2. Anything else raised inside it, and masks
that do not fit the model, are bugs of the algorithm: a :class:`~robprune_deploy.errors.PluginError`
naming the algorithm and its distribution (exit 3, the traceback in the error log), so a user can
tell whom to report it to.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from importlib import metadata

import torch

from robprune_deploy.errors import MaskShapeError, PluginError, RobPruneError


def _release(distribution: str) -> str:
    """``name version`` of an installed distribution, or the name alone."""
    try:
        return f"{distribution} {metadata.version(distribution)}"
    except (metadata.PackageNotFoundError, ValueError):
        return distribution


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0].strip()}" if lines else type(exc).__name__


@contextlib.contextmanager
def plugin_code(name: str, distribution: str, step: str) -> Iterator[None]:
    """Run an algorithm's ``step`` (``apply``, ``report``, ...), turning its bugs into :class:`PluginError`.

    :param name: the algorithm's registry name; :param distribution: the distribution that provides it.
    """
    who = f"algorithm {name!r} ({_release(distribution)})"
    try:
        yield
    except MaskShapeError as exc:
        raise PluginError(f"plugin bug: {who} made masks that do not fit the model in {step}: {exc}") from exc
    except (RobPruneError, MemoryError, torch.OutOfMemoryError):
        raise  # bad input, or a machine too small: not the algorithm's fault
    except Exception as exc:
        raise PluginError(f"plugin bug: {who} raised {_first_line(exc)} in {step}") from exc
