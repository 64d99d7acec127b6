"""Verifier types by name. Each registers a pydantic model of its parameters and a factory.

The spec validates `verify:` entries through this registry, so a verifier's parameters are declared once, next to
its code.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, ValidationError

from synthflow.stages.verifiers.base import Verifier


class VerifierParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class VerifierType:
    params: type[VerifierParams]
    factory: Callable[[str, VerifierParams], Verifier]


_REGISTRY: dict[str, VerifierType] = {}
# Modules that register built-in verifiers when imported.
_BUILTIN_MODULES = (
    "synthflow.stages.verifiers.builtin",
    "synthflow.stages.verifiers.rules",
    "synthflow.stages.verifiers.llm_judge",
    "synthflow.stages.verifiers.self_consistency",
    "synthflow.stages.verifiers.math_answer",
    "synthflow.stages.verifiers.code_tests",
    "synthflow.stages.verifiers.python_fn",
    "synthflow.stages.verifiers.semantic_dedup",
)
_loaded = False


def register(type_name: str, params: type[VerifierParams]):
    def deco(factory: Callable[[str, VerifierParams], Verifier]):
        _REGISTRY[type_name] = VerifierType(params, factory)
        return factory

    return deco


def _load_builtins() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for mod in _BUILTIN_MODULES:
            importlib.import_module(mod)


def known_types() -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY)


def validate_params(spec) -> VerifierParams:
    """Check one `verify:` entry; raises ValueError naming the verifier and the bad parameter."""
    _load_builtins()
    vt = _REGISTRY.get(spec.type)
    if vt is None:
        raise ValueError(f"unknown verifier type {spec.type!r}; known: {', '.join(known_types())}")
    try:
        return vt.params.model_validate(spec.params)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        msg = "unknown parameter" if first["type"] == "extra_forbidden" else first["msg"]
        raise ValueError(f"verifier {spec.label!r} ({spec.type}): {where}: {msg}") from None


def build(spec) -> Verifier:
    params = validate_params(spec)
    return _REGISTRY[spec.type].factory(spec.label, params)
