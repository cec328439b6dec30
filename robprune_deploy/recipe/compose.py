"""Recipes that compose: a recipe's top-level ``extends:`` names the recipe files it builds on.

``extends: PATH`` or ``extends: [PATH, ...]``: each path is relative to the folder of the file that
names it (as that file was named: a base of a symbolic link to a recipe is looked up next to the
link), or absolute; ``~`` is expanded. Paths are followed like any recipe path, links included:
a base may be any readable file.

Resolution, for a file with bases ``[B1, B2]``: ``B1`` resolved, then ``B2`` resolved merged over
it, then the file itself (less its ``extends`` key) merged over that. Merging is a *deep merge*:

- a mapping merges key by key, recursively; where both have a key, the later one wins;
- a list or a scalar replaces the earlier value whole (``providers: [cpu]`` over
  ``providers: [cuda, cpu]`` gives ``[cpu]``; lists never concatenate);
- ``null`` is a value like any other: ``gate: {min_speedup: null}`` sets the field to null,
  which for an optional field (thresholds, ``data.root``, ...) means "off"/"not given";
- a mapping over a scalar, or a scalar over a mapping, replaces it whole.

A key cannot be deleted: a child that wants a base's key gone sets the field's default (or
``null`` where the field takes it), or the bases are split so that it never gets the key. One
consequence worth knowing: a child that changes ``compression.algorithm`` still inherits the base's
``compression.config`` options, and options the new algorithm does not take are errors; set
``compression.config`` to what the new algorithm takes, key by key, or extend another base.

Only ``extends`` paths are relative to their file. Other paths in a recipe (``data.root``,
``model.checkpoint``) keep their usual meaning, whichever file they come from.

``--set`` overrides apply to the resolved document, and validation sees only the resolved
document: a base may be incomplete on its own. The resolved recipe is what a run saves
(``recipe.yaml`` in ``--out``), logs to MLflow and fingerprints, so editing a base changes the
fingerprint of every recipe that extends it, and ``--resume`` of a folder made before the edit
is refused like any other change of recipe.

Refused with one :class:`~robprune_deploy.errors.RecipeError` (exit 2) naming the file: an
``extends`` that is not a path or a list of paths, a base that does not exist or is not a file, a
base that is not a mapping, a cycle (a file that extends itself, directly or through its
bases: the message lists the chain), and chains deeper than :data:`MAX_EXTENDS_DEPTH` files.
A base extended along several paths (a diamond) is read and resolved once.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from robprune_deploy.errors import RecipeError

EXTENDS = "extends"
MAX_EXTENDS_DEPTH = 8
"""The most files in one chain of ``extends`` (the recipe itself included)."""

Reader = Callable[[Path], Any]
"""Reads and parses one file with the recipe loader's limits; raises ``RecipeError`` naming it."""


def deep_merge(base: Any, child: Any) -> Any:
    """``child`` merged over ``base``: mappings key by key (recursively, child wins), anything else
    replaced whole by ``child``. Neither argument is modified; the result shares no containers."""
    if isinstance(base, dict) and isinstance(child, dict):
        merged = {key: copy.deepcopy(value) for key, value in base.items()}
        for key, value in child.items():
            merged[key] = deep_merge(merged[key], value) if key in merged else copy.deepcopy(value)
        return merged
    return copy.deepcopy(child)


def _base_paths(document: dict[str, Any], file: Path) -> list[tuple[str, Path]]:
    """The bases ``document``'s ``extends`` names, in order: each as written, and as a path to open."""
    value = document[EXTENDS]
    entries = value if isinstance(value, list) else [value]
    if not entries or not all(isinstance(e, str) and e.strip() and "\x00" not in e for e in entries):
        raise RecipeError(
            f"recipe {file}: {EXTENDS}: expected a path or a non-empty list of paths (relative to this file)"
        )
    bases = []
    for entry in entries:
        path = Path(entry).expanduser()
        bases.append((entry, path if path.is_absolute() else file.parent / path))
    return bases


class _Resolver:
    def __init__(self, read: Reader) -> None:
        self.read = read
        # real path -> (resolved document, files in its longest chain): a diamond's base once
        self.done: dict[Path, tuple[dict[str, Any], int]] = {}

    def resolve(self, file: Path, chain: list[tuple[Path, Path, str]], label: str) -> tuple[dict[str, Any], int]:
        """``file`` with its bases merged in, and the number of files in its longest chain.

        :param chain: the files that extend ``file``, nearest last, each as (real path, path,
            label); a label is the path as its ``extends`` wrote it (the recipe's: as given).
        :param label: ``file`` as the ``extends`` that names it wrote it.
        """
        parent = chain[-1][1] if chain else None
        try:
            real = file.resolve()
        except (OSError, RuntimeError) as exc:  # a loop of symbolic links, a name too long
            where = f"recipe {parent}: {EXTENDS}: base {file}" if parent else f"recipe {file}"
            raise RecipeError(f"{where}: cannot be resolved ({exc.__class__.__name__})") from None
        reals = [link[0] for link in chain]
        if real in reals:
            cycle = [link[2] for link in chain[reals.index(real) :]] + [label]
            raise RecipeError(f"recipe {parent}: {EXTENDS} makes a cycle: {' -> '.join(cycle)}")
        if real in self.done:
            resolved, height = self.done[real]
        else:
            if len(chain) >= MAX_EXTENDS_DEPTH:
                self._too_deep(chain, label)
            document = self._read(file, parent)
            resolved, height = {}, 1
            for entry, base in _base_paths(document, file) if EXTENDS in document else []:
                merged, below = self.resolve(base, [*chain, (real, file, label)], entry)
                resolved, height = deep_merge(resolved, merged), max(height, below + 1)
            resolved = deep_merge(resolved, {key: value for key, value in document.items() if key != EXTENDS})
            self.done[real] = resolved, height
        if len(chain) + height > MAX_EXTENDS_DEPTH:  # a base resolved before, now reached deeper
            self._too_deep(chain, label)
        return resolved, height

    @staticmethod
    def _too_deep(chain: list[tuple[Path, Path, str]], label: str) -> NoReturn:
        """Refuse the chain that reaches ``label`` (it, or it with its own bases, is too long)."""
        files = " -> ".join([*(link[2] for link in chain), label])
        raise RecipeError(f"recipe {chain[0][1]}: {EXTENDS} chain deeper than {MAX_EXTENDS_DEPTH} files: {files}")

    def _read(self, file: Path, parent: Path | None) -> dict[str, Any]:
        """The parsed mapping of ``file``; a base is named together with the file that extends it."""
        if parent is None:  # the recipe itself: load_recipe checked the path
            document = self.read(file)
            if document is not None and not isinstance(document, dict):
                raise RecipeError(
                    f"recipe {file}: a recipe must be a mapping of sections, found {type(document).__name__}"
                )
            return document or {}
        if not file.exists():
            raise RecipeError(f"recipe {parent}: {EXTENDS}: base {file}: no such file")
        if not file.is_file():
            raise RecipeError(f"recipe {parent}: {EXTENDS}: base {file}: not a regular file")
        try:
            document = self.read(file)
        except RecipeError as exc:
            raise RecipeError(f"{exc} (a base of {parent})") from None
        if document is not None and not isinstance(document, dict):
            raise RecipeError(
                f"recipe {file}: a base (of {parent}) must be a mapping of sections, found {type(document).__name__}"
            )
        return document or {}


def resolve_document(file: Path, read: Reader) -> dict[str, Any]:
    """The document of recipe ``file`` with every ``extends`` resolved (see the module's text).

    :param read: parses one file (the loader's size, depth and alias limits), or raises
        ``RecipeError`` naming that file.
    :raises RecipeError: one line naming the file at fault (and the chain, for a cycle or depth).
    """
    return _Resolver(read).resolve(file, [], str(file))[0]
