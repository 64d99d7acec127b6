"""Prompt templates: Jinja2 in a sandbox. Seed text is data that fills a template, never code that runs."""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import AfterValidator


class TemplateError(ValueError):
    pass


@lru_cache(maxsize=1)
def _env() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False)
    env.filters["tojson"] = _tojson
    return env


def _tojson(value: Any) -> str:
    import json

    return json.dumps(value, ensure_ascii=False, default=str)


@lru_cache(maxsize=256)
def compile_template(source: str) -> jinja2.Template:
    try:
        return _env().from_string(source)
    except jinja2.TemplateSyntaxError as e:
        raise TemplateError(f"template syntax error on template line {e.lineno}: {e.message}") from e


def render(source: str, **context: Any) -> str:
    try:
        return compile_template(source).render(**context)
    except jinja2.UndefinedError as e:
        raise TemplateError(f"template uses an undefined name: {e.message}") from e
    except jinja2.exceptions.SecurityError as e:
        raise TemplateError(f"template tried something the sandbox forbids: {e}") from e


def checked_template(source: str) -> str:
    """A pydantic validator: the template compiles in the sandbox (a ValueError names the problem)."""
    try:
        compile_template(source)
    except TemplateError as e:
        raise ValueError(str(e)) from e
    return source


# A spec or verifier field that holds a Jinja2 template, checked when the spec is loaded.
TemplateStr = Annotated[str, AfterValidator(checked_template)]
