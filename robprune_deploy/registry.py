"""Name -> object registries, filled by decorators and, lazily, by entry points.

This mirrors NNCF's ``Registry`` (``@REGISTRY.register("name")``) with two differences that matter to a
plugin system: membership is tested on *names*, and a registry may be bound to an entry-point group that
is loaded the first time a name is looked up, so third-party packages register algorithms simply by
declaring ``[project.entry-points."robprune_deploy.algorithms"]``.

A name is never taken by install order. An entry point that reuses the name of one declared by one
of the registry's own distributions (a built-in: the core and its plugins) is ignored, and two other
distributions declaring the same name are both refused; each case is one warning naming both
distributions (:meth:`Registry.conflicts`), which the CLI prints in ``robprune algorithms`` and
before a run.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterator
from importlib import metadata
from typing import Generic, TypeVar

from robprune_deploy.errors import RobPruneError, UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """A mapping from names to registered objects.

    :param kind: what the registry holds, used in error messages (``"algorithm"``, ``"model"``).
    :param entry_point_group: optional entry-point group loaded on first lookup.
    :param home_distributions: the distributions whose entry points are the built-ins (the core and
        the plugins released with it); they win every name collision with another distribution, the
        first listed when several of them declare a name.
    """

    def __init__(
        self, kind: str, entry_point_group: str | None = None, home_distributions: tuple[str, ...] = ()
    ) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self.home_distributions = home_distributions
        self._items: dict[str, T] = {}
        self._providers: dict[str, str] = {}
        self._entry_points_loaded = entry_point_group is None
        self._broken: dict[str, str] = {}
        self._conflicts: list[str] = []
        self._from_entry_points: set[str] = set()

    def register(self, name: str, provider: str | None = None) -> Callable[[T], T]:
        """Decorator that registers an object under ``name``."""

        def decorator(obj: T) -> T:
            self.add(name, obj, provider)
            return obj

        return decorator

    def add(self, name: str, obj: T, provider: str | None = None) -> None:
        """Register ``obj`` under ``name``; re-registering the same object is a no-op."""
        existing = self._items.get(name)
        if existing is not None and existing is not obj:
            raise RobPruneError(f"{self.kind} {name!r} is registered twice ({self._providers.get(name)})")
        self._items[name] = obj
        module = getattr(obj, "__module__", None) or ""
        self._providers[name] = provider or module.split(".")[0]

    def get(self, name: str) -> T:
        """Return the object registered under ``name``.

        :raises UnknownNameError: listing the known names when ``name`` is not registered.
        """
        self._load_entry_points()
        if name in self._broken:
            raise RobPruneError(self._broken[name])
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, list(self._items)) from None

    def provider(self, name: str) -> str:
        """The distribution (or top-level package) that registered ``name``."""
        obj = self.get(name)
        known = self._providers.get(name)
        # An object put into the registry without add() (a test's stand-in) is named by its package.
        return known if known is not None else (getattr(obj, "__module__", None) or "unknown").split(".")[0]

    def names(self) -> list[str]:
        """Registered names (plugins that failed to load are listed by :meth:`broken`)."""
        self._load_entry_points()
        return sorted(self._items)

    def broken(self) -> dict[str, str]:
        """``{name: load error}`` of entry points that failed to import or were refused."""
        self._load_entry_points()
        return dict(self._broken)

    def conflicts(self) -> list[str]:
        """One warning per name that several distributions declare, naming them and what was done."""
        self._load_entry_points()
        return list(self._conflicts)

    def refresh(self) -> None:
        """Forget what the entry points registered; the next lookup reads them again (after a plugin
        was installed or removed in a running process). Objects registered in code are kept."""
        if self.entry_point_group is None:
            return
        for name in self._from_entry_points:
            self._items.pop(name, None)
            self._providers.pop(name, None)
        self._from_entry_points.clear()
        self._broken.clear()
        self._conflicts.clear()
        self._entry_points_loaded = False

    def __contains__(self, name: object) -> bool:
        self._load_entry_points()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        assert self.entry_point_group is not None
        declared: dict[str, list[metadata.EntryPoint]] = defaultdict(list)
        for entry_point in metadata.entry_points(group=self.entry_point_group):
            declared[entry_point.name].append(entry_point)
        for name, entry_points in declared.items():
            chosen = self._choose(name, entry_points)
            if chosen is not None:
                self._load(chosen)

    def _choose(self, name: str, entry_points: list[metadata.EntryPoint]) -> metadata.EntryPoint | None:
        """The one entry point that may register ``name``, or none (a conflict is recorded)."""
        by_distribution = {_distribution(ep): ep for ep in entry_points}
        homes = [d for h in self.home_distributions for d in by_distribution if _same_distribution(d, h)]
        home = homes[0] if homes else None
        others = sorted(d for d in by_distribution if d != home)
        if name in self._items:  # registered in code by the core: it stays
            owner = self._providers[name]
            for other in (d for d in by_distribution if d != owner):
                self._conflict(name, f"the entry point of {other} is ignored; the one of {owner} is used")
            return None
        if home is not None:
            for other in others:
                self._conflict(name, f"the entry point of {other} is ignored; the built-in of {home} is used")
            return by_distribution[home]
        if len(others) > 1:
            text = (
                f"{self.kind} {name!r} is declared by {len(others)} plugins ({', '.join(others)}): none is used, "
                f"since install order would pick one; uninstall all but one"
            )
            self._conflicts.append(text)
            self._broken[name] = text
            return None
        return entry_points[0]

    def _conflict(self, name: str, outcome: str) -> None:
        self._conflicts.append(f"{self.kind} {name!r} is declared more than once: {outcome}")

    def _load(self, entry_point: metadata.EntryPoint) -> None:
        try:
            obj = entry_point.load()
        except Exception as exc:  # a broken third-party plugin must not take the others down
            self._broken[entry_point.name] = (
                f"{self.kind} plugin {entry_point.name!r} ({entry_point.value}) failed to load: {exc}"
            )
            return
        self.add(entry_point.name, obj, _distribution(entry_point))
        self._from_entry_points.add(entry_point.name)


def _same_distribution(a: str, b: str | None) -> bool:
    """Distribution names compare as pip does: case-insensitive, ``-``, ``_`` and ``.`` alike."""
    return b is not None and re.sub(r"[-_.]+", "-", a).lower() == re.sub(r"[-_.]+", "-", b).lower()


def _distribution(entry_point: metadata.EntryPoint) -> str:
    """The name of the distribution declaring ``entry_point``, as its metadata spells it."""
    name = entry_point.dist.name if entry_point.dist is not None else None
    return name or f"(a distribution without a name, declaring {entry_point.value})"
