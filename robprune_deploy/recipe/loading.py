"""Loading recipes from YAML, resolving their ``extends`` bases (:mod:`robprune_deploy.recipe.compose`)
and applying ``--set key.path=value`` overrides.

Overrides are merged into the resolved document before validation, so they are checked exactly like the
file. Every problem is a single :class:`RecipeError` line naming the file and the dotted field path.

Hostile files fail fast: a recipe larger than :data:`MAX_RECIPE_BYTES`, nested deeper than
:data:`MAX_DEPTH`, or whose YAML aliases expand to more than :data:`MAX_NODES` values (a "billion
laughs" bomb is a few hundred bytes) is refused while it is parsed, before any Python object is
built from it, and no error message quotes more than a few dozen characters of a value.
"""

from __future__ import annotations

import copy
import difflib
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel, ValidationError

from robprune_deploy.errors import RecipeError, RobPruneError
from robprune_deploy.recipe.compose import EXTENDS, resolve_document
from robprune_deploy.recipe.schema import CompressionSection, Recipe

log = logging.getLogger(__name__)


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


MAX_RECIPE_BYTES = 1_000_000
MAX_DEPTH = 32
MAX_NODES = 100_000
_SHOWN_CHARS = 60


class _DepthLimitedLoader(_RecipeLoader):
    """Refuses literal nesting deeper than :data:`MAX_DEPTH` while composing (before PyYAML's
    recursive composer can exhaust the stack)."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise RecipeError(f"line {mark.line + 1}: nested deeper than {MAX_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _check_expansion(root: yaml.Node) -> None:
    """Count the values ``root`` stands for once aliases are expanded, and its expanded depth.

    Aliases share nodes, so the document is a graph; sizes are memoized per node, which takes time
    linear in the file however large the expansion is.
    """
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    active: set[int] = set()
    while stack:
        node, done = stack.pop()
        key = id(node)
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        if done:
            active.discard(key)
            size[key] = 1 + sum(size[id(c)] for c in children)
            depth[key] = 1 + max((depth[id(c)] for c in children), default=0)
            if size[key] > MAX_NODES:
                raise RecipeError(f"expands to more than {MAX_NODES} values (YAML aliases?)")
            if depth[key] > MAX_DEPTH:
                raise RecipeError(f"nested deeper than {MAX_DEPTH} levels once aliases are expanded")
            continue
        if key in size:
            continue
        if key in active:
            line = node.start_mark.line + 1 if node.start_mark is not None else 0
            raise RecipeError(f"line {line}: an alias refers to a value that contains it (recursive YAML)")
        active.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in size)


def _load_yaml(text: str) -> Any:
    """Parse ``text`` with the size, depth and alias-expansion limits.

    :raises RecipeError: without the source; callers add it.
    :raises yaml.YAMLError: for malformed YAML.
    """
    loader = _DepthLimitedLoader(text)  # safe: a SafeLoader subclass builds no arbitrary objects
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _clip(text: str) -> str:
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."


def _shown(value: Any) -> str:
    """``repr(value)``, cut to a few dozen characters (a message never quotes a whole document)."""
    if isinstance(value, (dict, list, tuple)) and len(value) > 8:
        return f"<{type(value).__name__} of {len(value)} items>"
    return _clip(repr(value))


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``"a.b.c=value"`` into ``(["a", "b", "c"], parsed value)``; the value is parsed as YAML.

    :raises RecipeError: when there is no ``=``, the path is empty, or the value is not YAML.
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise RecipeError(f"--set {_shown(text)}: expected key.path=value")
    path = key.split(".")
    if any(not part or not part.replace("_", "").replace("-", "").isalnum() for part in path):
        raise RecipeError(f"--set {_shown(text)}: {_shown(key)} is not a dotted field path")
    if len(text) > MAX_RECIPE_BYTES:
        raise RecipeError(f"--set {key}: the value is longer than {MAX_RECIPE_BYTES} characters")
    try:
        value = _load_yaml(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise RecipeError(f"--set {key}: value {_shown(raw)} is not valid YAML ({exc.__class__.__name__})") from None
    except RecipeError as exc:
        raise RecipeError(f"--set {key}: {exc}") from None
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


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model an annotation holds (``Section``, ``Section | None``, ``list[Section]``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next((m for m in map(_model_in, get_args(annotation)) if m is not None), None)


def field_names(model: type[BaseModel], loc: Sequence[Any]) -> list[str]:
    """The field names (and aliases) of the section at ``loc`` inside ``model``; [] when ``loc`` does
    not lead to a section."""
    current: type[BaseModel] | None = model
    for part in loc:
        if isinstance(part, int) and current is not None:
            continue  # a list's position: the list's items are the section
        if current is None or not isinstance(part, str):
            return []
        fields = current.model_fields
        info = fields.get(part) or next((f for f in fields.values() if f.alias == part), None)
        current = _model_in(info.annotation) if info is not None else None
    if current is None:
        return []
    names = [name for name in current.model_fields]
    return names + [f.alias for f in current.model_fields.values() if f.alias and f.alias not in names]


def did_you_mean(name: str, known: Sequence[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``known`` to ``name``, or nothing."""
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


QUOTING_ERRORS = ("threat", "corruption")
"""Error types whose message already quotes the value (``got -1``)."""


def _location(loc: Sequence[Any]) -> str:
    """``evaluate.threats[1].eps``: keys joined by dots, list positions in brackets."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f"{'.' if text else ''}{_clip(str(part))}"
    return text


def _format_error(error: Any, model: type[BaseModel], prefix: str = "") -> str:
    loc = _location(error["loc"]) or "(recipe)"
    message = error["msg"]
    if error["type"] == "extra_forbidden":
        message = "unknown field"
        if error["loc"] and isinstance(error["loc"][-1], str):
            message += did_you_mean(error["loc"][-1], field_names(model, error["loc"][:-1]))
    value = error.get("input")
    quiet = ("extra_forbidden", "missing", *QUOTING_ERRORS)
    shown = "" if error["type"] in quiet or isinstance(value, dict) else f" (got {_shown(value)})"
    return f"{prefix}{loc}: {message}{shown}"


def _message(source: str, problems: Sequence[str]) -> str:
    """Every problem on one line: a user fixes them all at once, not one per attempt."""
    if len(problems) == 1:
        return f"{source}: {problems[0]}"
    return f"{source}: {len(problems)} problems: " + "; ".join(problems)


def validate_recipe(document: Any, source: str = "<recipe>") -> Recipe:
    """Validate a parsed document (including ``compression.config`` against the algorithm).

    :raises RecipeError: ``"<source>: <field.path>: <message>"`` on one line, naming every invalid
        field (``"<source>: N problems: a: ...; b: ..."``), with a "did you mean" for a misspelled key.
    """
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise RecipeError(f"{source}: a recipe must be a mapping of sections, found {type(document).__name__}")
    problems: list[str] = []
    recipe: Recipe | None = None
    try:
        recipe = Recipe.model_validate(document)
    except ValidationError as exc:
        problems += [_format_error(error, Recipe) for error in exc.errors()]
    if recipe is not None:
        problems += recipe.split_problems() + recipe.checkpoint_problems() + recipe.threat_problems()
    problems += _algorithm_config_problems(document)
    if problems or recipe is None:
        raise RecipeError(_message(source, problems))
    return recipe


def _algorithm_config_problems(document: dict[str, Any]) -> list[str]:
    """The problems of ``compression.config`` under its algorithm's own config model (none when the
    section is malformed: the recipe's own validation names that)."""
    section = document.get("compression", {})
    if not isinstance(section, dict):
        return []
    algorithm = section.get("algorithm", CompressionSection().algorithm)
    config = section.get("config", {})
    if not isinstance(algorithm, str) or not isinstance(config, dict):
        return []
    return _algorithm_config(algorithm, config)[1]


def _algorithm_config(algorithm: str, config: dict[str, Any]) -> tuple[Any, list[str]]:
    """``(validated config, [])``, or ``(None, problems)``."""
    from robprune_deploy.algorithms import ALGORITHMS

    try:
        model = ALGORITHMS.get(algorithm).Config
    except RobPruneError as exc:
        return None, [f"compression.algorithm: {exc}"]
    try:
        return model.model_validate(config), []
    except ValidationError as exc:
        return None, [_format_error(e, model, "compression.config.") for e in exc.errors()]


def validate_algorithm_config(recipe: Recipe, source: str = "<recipe>") -> Any:
    """Validate ``compression.config`` with the algorithm's own config model; returns that config.

    :raises RecipeError: naming every invalid option (see :func:`validate_recipe`).
    """
    config, problems = _algorithm_config(recipe.compression.algorithm, recipe.compression.config)
    if problems:
        raise RecipeError(_message(source, problems))
    return config


def _read_recipe_file(file: Path) -> Any:
    """The parsed YAML of one recipe file (the recipe or a base), with the size and YAML limits.

    :raises RecipeError: ``"recipe <file>: ..."`` for an unreadable, oversized or malformed file.
    """
    try:
        with open(file, "rb") as handle:  # read at most the limit: the size on disk may change
            raw = handle.read(MAX_RECIPE_BYTES + 1)
        if len(raw) > MAX_RECIPE_BYTES:
            raise RecipeError(f"recipe {file}: larger than {MAX_RECIPE_BYTES} bytes; a recipe is a short YAML file")
        return _load_yaml(raw.decode("utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or exc.__class__.__name__
        raise RecipeError(f"recipe {file}:{where}: malformed YAML ({_clip(str(problem))})") from None
    except RecipeError as exc:
        message = str(exc)
        raise RecipeError(message if message.startswith("recipe ") else f"recipe {file}: {message}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"recipe {file}: cannot be read ({_clip(str(exc))})") from None


def resolve_recipe_file(path: str | Path) -> dict[str, Any]:
    """The document of recipe file ``path`` with its ``extends`` bases merged in, not yet validated.

    :raises RecipeError: for a missing or unreadable file or base, malformed YAML, or a bad
        ``extends`` (see :mod:`robprune_deploy.recipe.compose`).
    """
    file = Path(path)
    if "\x00" in str(file):
        raise RecipeError(f"recipe {str(file)!r}: the path contains a NUL character")
    if not file.exists():
        raise RecipeError(f"recipe {file}: no such file")
    if not file.is_file():
        raise RecipeError(f"recipe {file}: not a regular file")
    return resolve_document(file, _read_recipe_file)


def load_recipe(path: str | Path, overrides: Sequence[str] = ()) -> Recipe:
    """Read a recipe file, resolve its ``extends``, apply ``overrides`` and validate.

    :raises RecipeError: for a missing file, malformed YAML, a bad ``extends``, or any invalid field.
    """
    document = resolve_recipe_file(path)
    if any(parse_override(text)[0][0] == EXTENDS for text in overrides):
        raise RecipeError(f"--set {EXTENDS}: bases are read from the recipe file; --set applies after they are merged")
    overridden = apply_overrides(document, overrides)
    overridden = drop_other_algorithm_options(document, overridden, overrides)
    return validate_recipe(overridden, f"recipe {Path(path)}")


def drop_other_algorithm_options(
    document: dict[str, Any], overridden: dict[str, Any], overrides: Sequence[str]
) -> dict[str, Any]:
    """After ``--set compression.algorithm=X`` on a recipe written for another algorithm, drop the
    file's ``compression.config`` options that X does not take, with a one-line notice.

    Options X shares (``epochs``, ``lr``, ...) are kept, and options given with
    ``--set compression.config.KEY=...`` are never dropped: they are validated against X as usual.
    """
    paths = [parse_override(text)[0] for text in overrides]
    if ["compression", "algorithm"] not in paths or ["compression", "config"] in paths:
        return overridden
    file_section = document.get("compression")
    file_section = file_section if isinstance(file_section, dict) else {}
    section = overridden.get("compression")
    config = section.get("config") if isinstance(section, dict) else None
    algorithm = section.get("algorithm") if isinstance(section, dict) else None
    if not isinstance(config, dict) or algorithm == file_section.get("algorithm", CompressionSection().algorithm):
        return overridden
    from robprune_deploy.algorithms import ALGORITHMS

    if not isinstance(algorithm, str) or algorithm not in ALGORITHMS:
        return overridden  # validation names the unknown algorithm
    accepted = set(ALGORITHMS.get(algorithm).Config.model_fields)
    given = {path[2] for path in paths if path[:2] == ["compression", "config"] and len(path) > 2}
    dropped = sorted(key for key in config if key not in accepted and key not in given)
    if not dropped:
        return overridden
    result = copy.deepcopy(overridden)
    result["compression"]["config"] = {k: v for k, v in config.items() if k not in dropped}
    log.warning(
        "notice: compression.algorithm is %s (--set): dropped the recipe's compression.config %s (not options of %s)",
        algorithm,
        ", ".join(dropped),
        algorithm,
    )
    return result


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    """The resolved recipe as plain YAML-able data (paths as strings, enums as values)."""
    return recipe.model_dump(mode="json", by_alias=True)
