"""Expression columns: a Jinja template over earlier columns, rendered in the sandbox; no model is called."""

from __future__ import annotations

from typing import Any, Literal

from synthflow.stages.columns.base import ColumnContext, ColumnParams, Row, register
from synthflow.templates import TemplateError, TemplateStr, render

_CASTS = {
    "string": str,
    "integer": int,
    "number": float,
    "boolean": lambda s: s.strip().lower() in ("true", "1", "yes"),
}


class ExpressionParams(ColumnParams):
    template: TemplateStr
    dtype: Literal["string", "integer", "number", "boolean"] = "string"

    def templates(self) -> dict[str, str]:
        return {"template": self.template}

    def produces(self) -> dict[str, dict[str, Any]]:
        return {self.name: {"type": self.dtype}}


@register("expression", ExpressionParams)
def fill_expression(params: ExpressionParams, rows: list[Row], ctx: ColumnContext) -> list[Row]:
    for row in rows:
        try:
            text = render(params.template, **row.context())
            row.values[params.name] = _CASTS[params.dtype](text.strip()) if params.dtype != "string" else text
        except (TemplateError, ValueError) as e:
            row.error = f"column {params.name}: {e}"
    return rows
