"""One registry for everything synthflow creates by name: verifier types, generator backends, accumulation policies,
column types (`generate.columns`).

Built-ins register when their module is imported (the module names below are strings, so this module imports no
layer above it). Other packages add their own through Python entry points and never edit synthflow:

    [project.entry-points."synthflow.verifiers"]
    ends_with_question = "my_package.verifiers"

The entry point's name is the name a spec or profile uses. Loading it must register that name (a verifier module
uses `synthflow.stages.verifiers.register`); a backend or policy entry point may instead point at the object itself
(a generator class, a policy function), which is then registered as it is. Entry points load only when their name
is asked for: a plugin costs nothing to specs that do not use it, and a broken one breaks only those that do.
Built-in names win over entry points of the same name.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Sequence
from importlib.metadata import EntryPoint, entry_points
from typing import Generic, TypeVar

T = TypeVar("T")


class RegistryError(ValueError):
    """An unknown name, or a plugin that failed to provide the name it announced."""


class Registry(Generic[T]):
    """Items of one kind by name: built-in modules first, then the entry points of `group`."""

    def __init__(
        self,
        kind: str,
        group: str,
        builtin_modules: Sequence[str],
    ) -> None:
        self.kind = kind
        self.group = group
        self._builtin_modules = tuple(builtin_modules)
        # Set by the module that defines the item type (it is among the built-in modules): turns an entry point's
        # loaded object into an item when loading it registered nothing; None refuses the object.
        self.adopt: Callable[[str, object], T | None] | None = None
        self._items: dict[str, T] = {}
        self._loaded = False
        self._lock = threading.RLock()

    def register(self, name: str, item: T) -> T:
        self._items[name] = item
        return item

    def unregister(self, name: str) -> None:
        """Forget an item registered at run time (a test's double, a notebook's experiment)."""
        self._items.pop(name, None)

    def get(self, name: str) -> T:
        self._load_builtins()
        item = self._items.get(name)
        if item is None:
            with self._lock:
                item = self._items.get(name) or self._load_entry_point(name)
        return item

    def names(self) -> list[str]:
        """Every known name, including entry points not loaded yet."""
        self._load_builtins()
        return sorted({*self._items, *(ep.name for ep in self._entry_points())})

    def __contains__(self, name: str) -> bool:
        return name in self.names()

    def _load_builtins(self) -> None:
        if self._loaded:
            return
        with self._lock:
            if not self._loaded:
                for module in self._builtin_modules:
                    importlib.import_module(module)
                self._loaded = True

    def _entry_points(self) -> list[EntryPoint]:
        # Not cached: a plugin installed while this process runs (pip install in a notebook, a test) shows up.
        return list(entry_points(group=self.group))

    def _load_entry_point(self, name: str) -> T:
        found = [ep for ep in self._entry_points() if ep.name == name]
        if not found:
            raise RegistryError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}")
        ep = found[0]
        origin = f"entry point {ep.name} = {ep.value!r} (group {self.group}{_dist_of(ep)})"
        try:
            obj = ep.load()
        except Exception as e:
            raise RegistryError(f"{self.kind} {name!r}: the {origin} failed to load: {e}") from e
        if name not in self._items and self.adopt is not None:
            adopted = self.adopt(name, obj)
            if adopted is not None:
                self._items[name] = adopted
        if name not in self._items:
            raise RegistryError(f"{self.kind} {name!r}: loading the {origin} did not register {name!r}")
        return self._items[name]


def _dist_of(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return f", distribution {dist.name} {dist.version}" if dist is not None else ""


verifiers: Registry = Registry(
    "verifier type",
    "synthflow.verifiers",
    (
        "synthflow.stages.verifiers.builtin",
        "synthflow.stages.verifiers.rules",
        "synthflow.stages.verifiers.llm_judge",
        "synthflow.stages.verifiers.self_consistency",
        "synthflow.stages.verifiers.math_answer",
        "synthflow.stages.verifiers.code_tests",
        "synthflow.stages.verifiers.python_fn",
        "synthflow.stages.verifiers.semantic_dedup",
        "synthflow.stages.verifiers.decontaminate",
        "synthflow.stages.verifiers.pii",
    ),
)
backends: Registry = Registry("generator backend", "synthflow.backends", ("synthflow.generators.backends",))
policies: Registry = Registry("accumulation policy", "synthflow.policies", ("synthflow.stages.accumulate",))
columns: Registry = Registry(
    "column type",
    "synthflow.columns",
    (
        "synthflow.stages.columns.samplers",
        "synthflow.stages.columns.expression",
        "synthflow.stages.columns.llm",
        "synthflow.stages.columns.conversation",
        "synthflow.stages.columns.preference",
        "synthflow.stages.columns.evolve",
    ),
)
