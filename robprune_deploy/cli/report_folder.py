"""``robprune gate --report``: the folder gets the rules of ``--out`` for the whole gate.

It is checked, claimed and locked (:func:`~robprune_deploy.pipeline.ownership.owned_report`), and
a gate interrupted (Ctrl-C, SIGTERM) after it wrote ``gate.json`` but before ``--register``
finished leaves a ``gate.json`` that says so, rather than one that reads as a finished registration.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

from robprune_deploy.atomic import write_json
from robprune_deploy.gate.gating import GATE_JSON
from robprune_deploy.pipeline.ownership import owned_report
from robprune_deploy.recipe import Recipe


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        status = path.stat()
    except OSError:
        return None
    return status.st_ino, status.st_mtime_ns


@contextlib.contextmanager
def _unfinished_registration_noted(report: Path, register: str | None) -> Iterator[None]:
    gate_json = report / GATE_JSON
    before = _identity(gate_json)
    try:
        yield
    except KeyboardInterrupt as exc:
        written = _identity(gate_json)
        if register and written is not None and written != before:  # this gate's own gate.json
            with contextlib.suppress(OSError, ValueError):
                verdict = json.loads(gate_json.read_text(encoding="utf-8"))
                if isinstance(verdict, dict) and "registered_version" not in verdict:
                    signal = str(exc) or "Ctrl-C"
                    verdict["registration_error"] = f"interrupted ({signal}) before the registration finished"
                    write_json(gate_json, verdict)
        raise


@contextlib.contextmanager
def report_folder(args: argparse.Namespace, recipe: Recipe) -> Iterator[None]:
    """Own ``args.report`` while the gate runs (see the module's text)."""
    with owned_report(args.report, recipe), _unfinished_registration_noted(args.report, args.register):
        yield
