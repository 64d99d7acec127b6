"""The DAG of `generate.columns`: which earlier columns each template reads, and an order that respects them.

Plain functions over names, shared by the spec (checked at load time, so an unknown name or a cycle is reported with
its file, line and field) and by the round (the order columns are filled in).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from synthflow.templates import _env


def template_refs(source: str) -> dict[str, int]:
    """Every free name a template reads, with the template line it is first read on."""
    from jinja2 import meta, nodes

    ast = _env().parse(source)
    free = meta.find_undeclared_variables(ast) - set(_env().globals)
    return {
        name: min(n.lineno for n in ast.find_all(nodes.Name) if n.name == name and n.ctx == "load")
        for name in free
    }


def field_refs(source: str, structured: Mapping[str, Collection[str]]) -> list[tuple[int, str]]:
    """(template line, problem) for `{{ col.field }}` where `col` is a structured column without that field."""
    from jinja2 import nodes

    out = []
    for node in _env().parse(source).find_all(nodes.Getattr):
        inner = node.node
        if isinstance(inner, nodes.Name) and inner.name in structured:
            fields = structured[inner.name]
            if node.attr not in fields and not hasattr(dict, node.attr):
                out.append(
                    (
                        node.lineno,
                        f"template uses {inner.name}.{node.attr}, but column {inner.name!r} has no field "
                        f"{node.attr!r}; it has {sorted(fields)}",
                    )
                )
    return out


class CycleError(ValueError):
    def __init__(self, cycle: Sequence[str]):
        self.cycle = list(cycle)
        super().__init__("columns depend on each other in a cycle: " + " -> ".join(self.cycle))


def order(deps: Mapping[str, Collection[str]]) -> list[str]:
    """The columns in an order where each comes after everything it reads; ties keep the spec's order.

    `deps` maps each column (in spec order) to the columns it reads, all of them keys of `deps`.
    """
    names = list(deps)
    done: list[str] = []
    state: dict[str, str] = {}  # "open" while on the DFS path, "done" after

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "open":
            raise CycleError([*path[path.index(name) :], name])
        state[name] = "open"
        for dep in sorted(deps[name], key=names.index):
            visit(dep, [*path, name])
        state[name] = "done"
        done.append(name)

    for name in names:
        visit(name, [])
    return done
