"""Resolve an :class:`nncf.IgnoredScope` to the names of a torch model's layers."""

from __future__ import annotations

import re
from typing import Any

from torch import nn

from robprune_deploy.errors import PruningError

PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Conv2d, nn.Linear)


def prunable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every Conv2d and Linear layer of ``model`` by qualified name (BatchNorm is never masked)."""
    return {name: m for name, m in model.named_modules() if isinstance(m, PRUNABLE_TYPES)}


def _layer_list(model: nn.Module, limit: int = 24) -> str:
    """``"its Conv2d/Linear layers: a, b, ..."``: the names an ignored scope usually wants."""
    names = list(prunable_layers(model))
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return f"its Conv2d/Linear layers: {', '.join(names[:limit])}{more}"


def ignored_layer_names(model: nn.Module, ignored_scope: Any | None) -> set[str]:
    """Names of the layers of ``model`` that ``ignored_scope`` excludes.

    ``names`` match qualified module names exactly, ``patterns`` are regular expressions searched in
    them, ``types`` match module class names (``"Linear"``, ``"Conv2d"``). As in NNCF, a name or
    pattern that matches nothing is an error when the scope's ``validate`` flag is set.

    :raises PruningError: naming the unmatched entry.
    """
    if ignored_scope is None:
        return set()
    modules = dict(model.named_modules())
    selected: set[str] = set()
    validate = bool(getattr(ignored_scope, "validate", True))
    for name in getattr(ignored_scope, "names", []) or []:
        if name in modules:
            selected.add(name)
        elif validate:
            raise PruningError(f"ignored_scope.names: no layer named {name!r} in the model; {_layer_list(model)}")
    for pattern in getattr(ignored_scope, "patterns", []) or []:
        regex = re.compile(pattern)
        matched = {n for n in modules if n and regex.search(n)}
        if not matched and validate:
            raise PruningError(f"ignored_scope.patterns: {pattern!r} matches no layer of the model")
        selected |= matched
    for type_name in getattr(ignored_scope, "types", []) or []:
        matched = {n for n, m in modules.items() if n and type(m).__name__ == type_name}
        if not matched and validate:
            raise PruningError(f"ignored_scope.types: no layer of type {type_name!r} in the model")
        selected |= matched
    # A scope that names a container ignores every layer inside it.
    return {n for n in modules if n and any(n == s or n.startswith(s + ".") for s in selected)}
