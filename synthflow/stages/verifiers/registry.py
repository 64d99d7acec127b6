"""Verifier types by name. Each registers a pydantic model of its parameters and a factory.

The types live in synthflow.registry's `verifiers` registry (built-ins plus the `synthflow.verifiers` entry points
of installed plugins). The spec validates `verify:` entries through it, so a verifier's parameters are declared
once, next to its code, and adding one never touches spec.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

from synthflow.registry import verifiers
from synthflow.spec import VerifierSpec
from synthflow.stages.verifiers.base import Verifier


class VerifierParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class VerifierType:
    params: type[VerifierParams]
    factory: Callable[[str, VerifierParams], Verifier]


def register(type_name: str, params: type[VerifierParams]):
    """Decorator for a factory `(name, params) -> Verifier`; a plugin's entry point names the decorated module."""

    def deco(factory: Callable[[str, VerifierParams], Verifier]):
        verifiers.register(type_name, VerifierType(params, factory))
        return factory

    return deco


verifiers.adopt = lambda name, obj: obj if isinstance(obj, VerifierType) else None


def known_types() -> list[str]:
    return verifiers.names()


def validate_params(spec: VerifierSpec) -> VerifierParams:
    """Check one `verify:` entry; raises ValueError naming the verifier and the bad parameter."""
    return spec.checked_params()


def build(spec: VerifierSpec) -> Verifier:
    return verifiers.get(spec.type).factory(spec.label, validate_params(spec))
