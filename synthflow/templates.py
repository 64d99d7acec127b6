"""Prompt templates: Jinja2 in a sandbox. Seed text is data that fills a template, never code that runs."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from functools import lru_cache
from typing import Annotated, Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import AfterValidator


class TemplateError(ValueError):
    """A template that cannot be used; `lineno` is the template's own line (1-based) where known."""

    def __init__(self, message: str, lineno: int | None = None):
        super().__init__(message)
        self.lineno = lineno


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
        raise TemplateError(f"template syntax error on template line {e.lineno}: {e.message}", e.lineno) from e


def render(source: str, **context: Any) -> str:
    try:
        return compile_template(source).render(**context)
    except jinja2.UndefinedError as e:
        raise TemplateError(f"template uses an undefined name: {e.message}") from e
    except jinja2.exceptions.SecurityError as e:
        raise TemplateError(f"template tried something the sandbox forbids: {e}") from e


def unknown_names(
    source: str, names: Collection[str], item_fields: Mapping[str, Collection[str]] | None = None
) -> list[tuple[int, str]]:
    """(template line, problem) for every name the template reads that rendering will not give it.

    `names` are the variables the template is rendered with; `item_fields` names, for a list variable, the fields
    of its items, so that `{% for ex in exemplars %}{{ ex.topic }}` and `exemplars[0].topic` are checked too.
    """
    from jinja2 import meta, nodes

    ast = _env().parse(source)
    given = set(names) | set(_env().globals)
    out: list[tuple[int, str]] = []
    for name in sorted(meta.find_undeclared_variables(ast) - given):
        first = min(n.lineno for n in ast.find_all(nodes.Name) if n.name == name and n.ctx == "load")
        out.append((first, f"template uses {name!r}, which it is not given; it sees {sorted(names)}"))

    def check(node: nodes.Node, item: str, fields: Collection[str], what: str) -> None:
        if isinstance(node, nodes.Getattr):
            field = node.attr
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
            field = node.arg.value
        else:
            return
        if field not in fields and not hasattr(dict, field):
            out.append(
                (node.lineno, f"template uses {item}.{field}, but {what} has no field {field!r}; it has {sorted(fields)}")
            )

    for var, fields in (item_fields or {}).items():
        for loop in ast.find_all(nodes.For):
            if isinstance(loop.iter, nodes.Name) and loop.iter.name == var and isinstance(loop.target, nodes.Name):
                alias = loop.target.name
                for body in loop.body:
                    for node in body.find_all((nodes.Getattr, nodes.Getitem)):
                        if isinstance(node.node, nodes.Name) and node.node.name == alias:
                            check(node, alias, fields, f"an item of {var}")
        for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
            inner = node.node
            if isinstance(inner, nodes.Getitem) and isinstance(inner.node, nodes.Name) and inner.node.name == var:
                check(node, f"{var}[...]", fields, f"an item of {var}")
    return sorted(set(out))


def checked_template(source: str) -> str:
    """A pydantic validator: the template compiles in the sandbox (a TemplateError, a ValueError with the
    template's line, names the problem)."""
    compile_template(source)
    return source


# A spec or verifier field that holds a Jinja2 template, checked when the spec is loaded.
TemplateStr = Annotated[str, AfterValidator(checked_template)]
