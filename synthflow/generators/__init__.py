"""Generation backends behind one protocol (see base.py), created by name from a resource profile."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from synthflow.generators.base import GenerationRequest, GenerationResult, Generator, SamplingParams, Usage

__all__ = [
    "GenerationRequest",
    "GenerationResult",
    "Generator",
    "SamplingParams",
    "Usage",
    "make_generator",
    "BACKENDS",
]


def _transformers(model: str, **options: Any) -> Generator:
    from synthflow.generators.transformers_backend import TransformersGenerator

    return TransformersGenerator(model, **options)


def _smoke(model: str = "smoke", **options: Any) -> Generator:
    from synthflow.generators.transformers_backend import TransformersGenerator

    return TransformersGenerator("smoke", **options)


def _vllm(model: str, **options: Any) -> Generator:
    from synthflow.generators.vllm_backend import VLLMGenerator

    return VLLMGenerator(model, **options)


def _openai(model: str, **options: Any) -> Generator:
    from synthflow.generators.openai_backend import OpenAIGenerator

    return OpenAIGenerator(model, **options)


def _python(model: str, **options: Any) -> Generator:
    from synthflow.generators.python_backend import PythonGenerator

    return PythonGenerator(model, **options)


def _ray(model: str, **options: Any) -> Generator:
    from synthflow.generators.ray_backend import RayGenerator

    # `backend` is make_generator's own argument, so a profile names the backend inside the actors `engine`.
    return RayGenerator(model, backend=options.pop("engine", "transformers"), **options)


# Imported lazily: a profile that uses one backend never imports the others (vLLM alone takes seconds to import).
BACKENDS: dict[str, Callable[..., Generator]] = {
    "transformers": _transformers,
    "smoke": _smoke,
    "vllm": _vllm,
    "openai": _openai,
    "python": _python,
    "ray": _ray,
}


def make_generator(backend: str, model: str, **options: Any) -> Generator:
    try:
        factory = BACKENDS[backend]
    except KeyError:
        raise ValueError(
            f"unknown generator backend {backend!r}; known: {', '.join(sorted(BACKENDS))}"
        ) from None
    return factory(model, **options)
