"""Reference pages generated from the code: the recipe schema, the argument parsers, the exit codes.

``python -m robprune_deploy.reference`` writes them to ``docs/reference/``; ``--check`` fails when a
committed page differs from what the code renders (``tests/test_docs.py`` runs the same check).
Nothing here is imported by the ``robprune`` command itself.
"""

from __future__ import annotations

from robprune_deploy.reference.cli import cli_reference, synopsis
from robprune_deploy.reference.exit_codes import exit_codes_reference
from robprune_deploy.reference.pages import PAGES, builtin_algorithm_configs, render_pages, stale_pages
from robprune_deploy.reference.recipe import recipe_reference

__all__ = [
    "PAGES",
    "builtin_algorithm_configs",
    "cli_reference",
    "exit_codes_reference",
    "recipe_reference",
    "render_pages",
    "stale_pages",
    "synopsis",
]
