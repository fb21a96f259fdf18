"""One registry shape for every extension point: tasks, engines, curation filters, training settings.

A member is registered once, with its name and a one-line description:

    @TASKS.register("gsm8k", "GSM8K grade-school math word problems; numeric answer (bundled, MIT)")
    class GSM8K(Task): ...

Built-in members are found by the package itself: the registry imports every module of its package
(e.g. all of `reflectevo.tasks`) the first time it is asked for a member. Third-party members come from
Python entry points of the registry's group (e.g. `reflectevo.tasks`), so a plugin package is found as
soon as it is installed (docs/architecture.md shows one):

    [project.entry-points."reflectevo.tasks"]
    primes = "my_plugin.tasks"          # importing the module registers its members
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Callable, Generic, Iterator, TypeVar

from reflectevo.errors import InputError, ReflectEvoError

T = TypeVar("T")


@dataclass
class Entry(Generic[T]):
    name: str
    description: str
    obj: T
    info: dict[str, Any] = field(default_factory=dict)  # what else a kind of member declares


class Registry(Generic[T]):
    """Members of one kind, by name. `package`: where the built-ins live; `group`: the entry-point group."""

    def __init__(self, kind: str, package: str, group: str, modules: tuple[str, ...] | None = None):
        # `modules`: the built-in modules to import, where importing the whole package would be costly
        # (engines: the hf module imports torch)
        self.kind, self.package, self.group, self.modules = kind, package, group, modules
        self._entries: dict[str, Entry[T]] = {}
        self._loaded = False

    def register(self, name: str, description: str, **info) -> Callable[[T], T]:
        """Decorator: `@REGISTRY.register(name, description)`; `info` holds per-kind declarations."""

        def wrap(obj: T) -> T:
            self._entries[name] = Entry(name, description, obj, info)
            return obj

        return wrap

    def add(self, name: str, description: str, obj: T, **info) -> T:
        """Register an object that is not defined by a def or class statement."""
        return self.register(name, description, **info)(obj)

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for name in self.modules if self.modules is not None else self._package_modules():
            importlib.import_module(name)
        for point in entry_points(group=self.group):
            try:
                point.load()
            except Exception as exc:  # noqa: BLE001 - a broken plugin is named, not a traceback
                raise ReflectEvoError(f"plugin {point.name!r} ({point.value}, entry point group {self.group}) "
                                      f"failed to load: {type(exc).__name__}: {exc}") from exc

    def _package_modules(self) -> list[str]:
        package = importlib.import_module(self.package)
        return [m.name for m in pkgutil.iter_modules(package.__path__, self.package + ".")
                if not m.name.rsplit(".", 1)[-1].startswith("_")]

    def unknown(self, name: str, also: str = "") -> InputError:
        known = ", ".join(sorted(self._entries))
        return InputError(f"unknown {self.kind} {name!r}; known {self.kind}s: {known}" + (f", {also}" if also else ""))

    def get(self, name: str) -> Entry[T]:
        self._load()
        if name not in self._entries:
            raise self.unknown(name)
        return self._entries[name]

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        self._load()
        return iter(sorted(self._entries.values(), key=lambda e: e.name))

    def names(self) -> list[str]:
        return [e.name for e in self]

    def describe(self) -> dict[str, str]:
        return {e.name: e.description for e in self}
