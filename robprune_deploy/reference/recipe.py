"""The recipe reference: every field of a pydantic schema, walked section by section.

The page is the schema's own account of itself (type, default, bounds, description), so a field
added, renamed or re-bounded in :mod:`robprune_deploy.recipe.schema` changes the page; nothing in it
is written by hand.
"""

from __future__ import annotations

import enum
import types
import typing
from collections.abc import Iterator, Mapping
from pathlib import PurePath
from typing import Any

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from robprune_deploy.reference.markdown import cell, slug, table

_NAMES = {int: "integer", float: "number", str: "text", bool: "boolean", type(None): "null"}


def _is_section(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def type_name(annotation: Any) -> str:
    """A reader's name for ``annotation``: ``integer or null``, ``one of: cuda, cpu``, ``list of text``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin is typing.Literal:
        return " \\| ".join(f"`{_yaml(a)}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        parts = [type_name(a) for a in args if a is not type(None)]
        return " or ".join(parts) + (" or null" if type(None) in args else "")
    if origin in (list, tuple, set, frozenset):
        return f"list of {type_name(args[0])}" if args else "list"
    if origin in (dict, Mapping):
        if not args or args[1] is Any:
            return "mapping"
        return f"mapping of {type_name(args[0])} to {type_name(args[1])}"
    if annotation is Any:
        return "any"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return " \\| ".join(f"`{member.value}`" for member in annotation)
    if _is_section(annotation):
        return "section"
    if isinstance(annotation, type) and issubclass(annotation, PurePath):
        return "path"
    return _NAMES.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _yaml(value: Any) -> str:
    """``value`` as a recipe spells it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, enum.Enum):
        return _yaml(value.value)
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_yaml(k)}: {_yaml(v)}" for k, v in value.items()) + "}"
    return str(value)


def default_of(field: FieldInfo) -> str:
    """The default as a recipe would spell it; a section's default is its own fields' defaults."""
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return ""  # a section: its fields carry the defaults
    return f"`{_yaml(value)}`"


def bounds_of(field: FieldInfo) -> str:
    """``ge``/``gt``/``le``/``lt`` and length limits as an interval or an inequality."""
    lower = upper = ""
    extra: list[str] = []
    for item in field.metadata:
        if isinstance(item, annotated_types.Ge):
            lower = f"[{item.ge}"
        elif isinstance(item, annotated_types.Gt):
            lower = f"({item.gt}"
        elif isinstance(item, annotated_types.Le):
            upper = f"{item.le}]"
        elif isinstance(item, annotated_types.Lt):
            upper = f"{item.lt})"
        elif isinstance(item, annotated_types.MinLen):
            extra.append(f"at least {item.min_length} item{'s' if item.min_length != 1 else ''}")
        elif isinstance(item, annotated_types.MaxLen):
            extra.append(f"at most {item.max_length} items")
    if lower and upper:
        extra.insert(0, f"{lower}, {upper}")
    elif lower:
        extra.insert(0, ("≥ " if lower[0] == "[" else "> ") + lower[1:])
    elif upper:
        extra.insert(0, ("≤ " if upper[-1] == "]" else "< ") + upper[:-1])
    return ", ".join(extra)


def _key(name: str, field: FieldInfo) -> str:
    return field.alias or name  # the YAML key (IgnoredScope's `validate` is `validate_scope` in Python)


def _doc(model: type[BaseModel]) -> str:
    """The first paragraph of a section's own docstring (not one inherited from pydantic's BaseModel)."""
    text = model.__dict__.get("__doc__") or ""
    return " ".join(text.strip().split("\n\n")[0].split())


def held_section(annotation: Any) -> tuple[type[BaseModel], str] | None:
    """The section a field holds and how its path continues: ``""`` for a section (or null),
    ``"[]"`` for a list of them (``evaluate.threats[].eps``), ``".<name>"`` for a mapping of names
    to them (``gate.threats.<name>.min_acc``); ``None`` for a field that holds no section."""
    if _is_section(annotation):
        return annotation, ""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        held = [h for h in map(held_section, args) if h is not None]
        return held[0] if len(held) == 1 and held[0][1] == "" else None
    if origin is list and args and _is_section(args[0]):
        return args[0], "[]"
    if origin in (dict, Mapping) and len(args) == 2 and _is_section(args[1]):
        return args[1], ".<name>"
    return None


def sections(schema: type[BaseModel], path: str = "") -> Iterator[tuple[str, type[BaseModel]]]:
    """``(dotted path, model)`` of ``schema`` and of every section inside it (directly, optional, in
    a list or in a mapping), depth first."""
    yield path, schema
    for name, field in schema.model_fields.items():
        held = held_section(field.annotation)
        if held is not None:
            key = f"{path}.{_key(name, field)}" if path else _key(name, field)
            yield from sections(held[0], key + held[1])


def fields_table(model: type[BaseModel], path: str = "") -> str:
    """One row per field of ``model``: key, type, default, bounds, description."""
    rows = []
    for name, field in model.model_fields.items():
        key = f"{path}.{_key(name, field)}" if path else _key(name, field)
        kind = type_name(field.annotation)
        held = held_section(field.annotation)
        if held is not None:  # its own table follows under a heading named by its path
            kind = kind.replace("section", f"[section](#{slug(f'`{key}{held[1]}`')})", 1)
        rows.append([f"`{key}`", kind, default_of(field), cell(bounds_of(field)), cell(field.description or "")])
    return table(["field", "type", "default", "bounds", "description"], rows)


INTRO = (
    "A recipe is one YAML file. Unknown keys are errors, and every field has a default, so the smallest "
    "recipe is `{}`. Floats must be finite (NaN and inf are refused); bounds are inclusive where written "
    "`[`/`]` and `≥`/`≤`, exclusive where written `(`/`)` and `>`/`<`. Any field can be overridden on the "
    "command line by its dotted path: `--set compression.ratio=0.5`."
)


def recipe_reference(
    schema: type[BaseModel],
    algorithms: Mapping[str, tuple[type[BaseModel], str]] | None = None,
    *,
    title: str = "Recipe reference",
    source: str = "robprune_deploy/recipe/schema.py",
) -> str:
    """The recipe reference of ``schema`` in Markdown.

    :param schema: the recipe model (:class:`robprune_deploy.recipe.schema.Recipe`, or any pydantic model).
    :param algorithms: ``{name: (config model, description)}``: each algorithm's ``compression.config``
        options, rendered after the recipe's own sections.
    """
    lines = [
        f"# {title}",
        "",
        f"<!-- Generated from {source} by `python -m robprune_deploy.reference`; do not edit by hand. -->",
        "",
        INTRO,
        "",
    ]
    for path, model in sections(schema):
        lines += [f"## `{path}`" if path else "## Top level", ""]
        doc = _doc(model)
        if doc:
            lines += [doc, ""]
        lines += [fields_table(model, path), ""]
    for name, (config, description) in (algorithms or {}).items():
        lines += [f"## `compression.config` of `{name}`", ""]
        lines += [f"`compression.algorithm: {name}`: {description}.", ""]
        doc = _doc(config)
        if doc:
            lines += [doc, ""]
        lines += [fields_table(config, "compression.config"), ""]
    return "\n".join(lines).rstrip("\n") + "\n"
