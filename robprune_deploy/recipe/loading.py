"""Loading recipes from YAML and applying ``--set key.path=value`` overrides.

Overrides are merged into the document before validation, so they are checked exactly like the
file. Every problem is a single :class:`RecipeError` line naming the file and the dotted field path.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from robprune_deploy.errors import RecipeError, RobPruneError
from robprune_deploy.recipe.schema import Recipe


class _RecipeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads exponent floats without a dot (``1e-3``) as floats.

    PyYAML follows YAML 1.1, where ``1e-3`` is a string: a recipe's ``lr: 1e-3`` would reach the
    schema as text, and ``--set`` values would not round-trip. YAML 1.2 reads it as a number.
    """


_RecipeLoader.add_implicit_resolver(  # add_implicit_resolver copies the table: SafeLoader is unchanged
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def _load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_RecipeLoader)  # safe: a SafeLoader subclass builds no arbitrary objects


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``"a.b.c=value"`` into ``(["a", "b", "c"], parsed value)``; the value is parsed as YAML.

    :raises RecipeError: when there is no ``=``, the path is empty, or the value is not YAML.
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise RecipeError(f"--set {text!r}: expected key.path=value")
    path = key.split(".")
    if any(not part or not part.replace("_", "").replace("-", "").isalnum() for part in path):
        raise RecipeError(f"--set {text!r}: {key!r} is not a dotted field path")
    try:
        value = _load_yaml(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise RecipeError(f"--set {key}: value {raw!r} is not valid YAML ({exc.__class__.__name__})") from None
    return path, value


def apply_overrides(document: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A copy of ``document`` with every override set (intermediate mappings are created)."""
    result = copy.deepcopy(document)
    for text in overrides:
        path, value = parse_override(text)
        node: Any = result
        for depth, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                where = ".".join(path[: depth + 1])
                raise RecipeError(f"--set {'.'.join(path)}: {where} is a value, not a section")
            node = child
        node[path[-1]] = value
    return result


def _format_error(error: Any, prefix: str = "") -> str:
    loc = ".".join(str(p) for p in error["loc"]) or "(recipe)"
    message = error["msg"]
    if error["type"] == "extra_forbidden":
        message = "unknown field"
    value = error.get("input")
    shown = "" if error["type"] in ("extra_forbidden", "missing") or isinstance(value, dict) else f" (got {value!r})"
    return f"{prefix}{loc}: {message}{shown}"


def validate_recipe(document: Any, source: str = "<recipe>") -> Recipe:
    """Validate a parsed document (including ``compression.config`` against the algorithm).

    :raises RecipeError: ``"<source>: <field.path>: <message>"``, the first error only (one line).
    """
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise RecipeError(f"{source}: a recipe must be a mapping of sections, found {type(document).__name__}")
    try:
        recipe = Recipe.model_validate(document)
    except ValidationError as exc:
        errors = exc.errors()
        extra = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise RecipeError(f"{source}: {_format_error(errors[0])}{extra}") from None
    problems = recipe.split_problems()
    if problems:
        raise RecipeError(f"{source}: {problems[0]}")
    validate_algorithm_config(recipe, source)
    return recipe


def validate_algorithm_config(recipe: Recipe, source: str = "<recipe>") -> Any:
    """Validate ``compression.config`` with the algorithm's own config model; returns that config."""
    from robprune_deploy.algorithms import ALGORITHMS

    try:
        algorithm = ALGORITHMS.get(recipe.compression.algorithm)
    except RobPruneError as exc:
        raise RecipeError(f"{source}: compression.algorithm: {exc}") from None
    try:
        return algorithm.Config.model_validate(recipe.compression.config)
    except ValidationError as exc:
        errors = exc.errors()
        raise RecipeError(f"{source}: {_format_error(errors[0], 'compression.config.')}") from None


def load_recipe(path: str | Path, overrides: Sequence[str] = ()) -> Recipe:
    """Read, override and validate a recipe file.

    :raises RecipeError: for a missing file, malformed YAML, or any invalid field.
    """
    file = Path(path)
    if not file.is_file():
        raise RecipeError(f"recipe {file}: no such file")
    try:
        document = _load_yaml(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or exc.__class__.__name__
        raise RecipeError(f"recipe {file}:{where}: malformed YAML ({problem})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"recipe {file}: cannot be read ({exc})") from None
    if document is not None and not isinstance(document, dict):
        raise RecipeError(f"recipe {file}: a recipe must be a mapping of sections, found {type(document).__name__}")
    document = apply_overrides(document or {}, overrides)
    return validate_recipe(document, f"recipe {file}")


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    """The resolved recipe as plain YAML-able data (paths as strings, enums as values)."""
    return recipe.model_dump(mode="json", by_alias=True)
