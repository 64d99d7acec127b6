"""Generation backends behind one protocol (see base.py), created by name from a resource profile.

The backends are registered in synthflow.registry (see backends.py); plugins add theirs through the
`synthflow.backends` entry point group.
"""

from __future__ import annotations

from synthflow.generators.backends import (
    Backend,
    check_options,
    get_backend,
    make_generator,
    register_backend,
)
from synthflow.generators.base import GenerationRequest, GenerationResult, Generator, SamplingParams, Usage

__all__ = [
    "Backend",
    "GenerationRequest",
    "GenerationResult",
    "Generator",
    "SamplingParams",
    "Usage",
    "check_options",
    "get_backend",
    "make_generator",
    "register_backend",
]
