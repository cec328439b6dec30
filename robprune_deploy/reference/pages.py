"""The generated pages of ``docs/reference/`` and the check that the committed copies are current."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel


def builtin_algorithm_configs() -> dict[str, tuple[type[BaseModel], str]]:
    """``{name: (Config, description)}`` of the algorithms the core and its own plugins declare (a
    third-party plugin installed beside them documents itself: the page must not depend on what else is
    installed)."""
    from robprune_deploy.algorithms import ALGORITHMS, BUILT_IN_DISTRIBUTIONS

    configs: dict[str, tuple[type[BaseModel], str]] = {}
    for name in ALGORITHMS.names():
        if ALGORITHMS.provider(name) in BUILT_IN_DISTRIBUTIONS:
            algorithm = ALGORITHMS.get(name)
            configs[name] = (algorithm.Config, algorithm.description)
    return configs


def _recipe() -> str:
    from robprune_deploy.recipe.schema import Recipe
    from robprune_deploy.reference.recipe import recipe_reference

    return recipe_reference(Recipe, builtin_algorithm_configs())


def _cli() -> str:
    from robprune_deploy.cli.main import build_parser
    from robprune_deploy.reference.cli import cli_reference

    return cli_reference(build_parser(), prog="robprune")


def _exit_codes() -> str:
    from robprune_deploy.errors import EXIT_CODES
    from robprune_deploy.reference.exit_codes import exit_codes_reference

    return exit_codes_reference(EXIT_CODES)


def _summary_keys() -> str:
    from robprune_deploy.pipeline.summary_schema import summary_keys_markdown

    return summary_keys_markdown()


PAGES: dict[str, Callable[[], str]] = {
    "reference/recipe.md": _recipe,
    "reference/cli.md": _cli,
    "reference/exit-codes.md": _exit_codes,
    "reference/summary.md": _summary_keys,
}
"""Page (relative to the docs folder) and the function that renders it."""


def render_pages(docs: Path) -> list[Path]:
    """Write every generated page under ``docs``; returns the pages whose text changed."""
    changed = []
    for name, render in PAGES.items():
        path = docs / name
        text = render()
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            changed.append(path)
    return changed


def stale_pages(docs: Path) -> list[str]:
    """The generated pages under ``docs`` that are missing or differ from what the code renders."""
    return [
        name
        for name, render in PAGES.items()
        if not (docs / name).is_file() or (docs / name).read_text(encoding="utf-8") != render()
    ]
