"""Name -> object registries, filled by decorators and, lazily, by entry points.

This mirrors NNCF's ``Registry`` (``@REGISTRY.register("name")``) with two differences that matter to a
plugin system: membership is tested on *names*, and a registry may be bound to an entry-point group that
is loaded the first time a name is looked up, so third-party packages register algorithms simply by
declaring ``[project.entry-points."robprune_deploy.algorithms"]``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from importlib import metadata
from typing import Generic, TypeVar

from robprune_deploy.errors import RobPruneError, UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """A mapping from names to registered objects.

    :param kind: what the registry holds, used in error messages (``"algorithm"``, ``"model"``).
    :param entry_point_group: optional entry-point group loaded on first lookup.
    """

    def __init__(self, kind: str, entry_point_group: str | None = None) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._items: dict[str, T] = {}
        self._providers: dict[str, str] = {}
        self._entry_points_loaded = entry_point_group is None
        self._broken: dict[str, str] = {}

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
        self.get(name)
        return self._providers[name]

    def names(self) -> list[str]:
        """Registered names (plugins that failed to load are listed by :meth:`broken`)."""
        self._load_entry_points()
        return sorted(self._items)

    def broken(self) -> dict[str, str]:
        """``{name: load error}`` of entry points that failed to import."""
        self._load_entry_points()
        return dict(self._broken)

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
        for entry_point in metadata.entry_points(group=self.entry_point_group):
            if entry_point.name in self._items:
                continue
            try:
                obj = entry_point.load()
            except Exception as exc:  # a broken third-party plugin must not take the others down
                self._broken[entry_point.name] = (
                    f"{self.kind} plugin {entry_point.name!r} ({entry_point.value}) failed to load: {exc}"
                )
                continue
            distribution = entry_point.dist.name if entry_point.dist is not None else None
            self.add(entry_point.name, obj, distribution)
