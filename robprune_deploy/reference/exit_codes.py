"""The exit-code page, from :data:`robprune_deploy.errors.EXIT_CODES`."""

from __future__ import annotations

from collections.abc import Sequence

from robprune_deploy.errors import ExitCode
from robprune_deploy.reference.markdown import cell, table

NOTE = (
    "The codes are the same for every command, so a CI job can tell them apart. No other code is ever "
    "returned: the error handling itself cannot fail (exit 1 only ever means a verdict: a failed gate, or "
    "`doctor` finding the machine unusable). Messages print control characters escaped, so no path or name "
    'can print a line of its own (a forged "gate PASSED").'
)


def exit_codes_reference(codes: Sequence[ExitCode], *, title: str = "Exit codes") -> str:
    """The table of ``codes`` in Markdown."""
    rows = [[f"`{c.code}`", c.name, cell(c.meaning)] for c in codes]
    lines = [
        f"# {title}",
        "",
        "<!-- Generated from robprune_deploy/errors.py (EXIT_CODES) by `python -m robprune_deploy.reference`; "
        "do not edit by hand. -->",
        "",
        NOTE,
        "",
        table(["code", "name", "meaning"], rows),
    ]
    return "\n".join(lines) + "\n"
