"""Sampler columns: values drawn, not generated. Each draw is seeded by (spec seed, round, row, column), so a resumed
round draws the same values and the LLM requests that read them hit the request cache."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from synthflow.spec import DataSourceSpec
from synthflow.stages.columns.base import ColumnContext, ColumnParams, Row, draw_seed, register
from synthflow.stages.seed import load_table

Value = str | int | float | bool


def _json_type(values: list[Any]) -> dict[str, Any]:
    kinds = {type(v) for v in values}
    if kinds <= {bool}:
        return {"type": "boolean"}
    if kinds <= {int}:
        return {"type": "integer"}
    if kinds <= {int, float}:
        return {"type": "number"}
    return {"type": "string"}


class CategoryParams(ColumnParams):
    # A plain list (equal shares) or {value: weight}; weights need not sum to 1.
    values: list[Value] | dict[str, float] = Field(min_length=1)
    # The round's `sampler_shares` check fails when an accepted share is further than this from its weight.
    max_share_deviation: float | None = Field(default=None, gt=0, le=1)

    @field_validator("values")
    @classmethod
    def _weights_positive(cls, v: list[Value] | dict[str, float]) -> list[Value] | dict[str, float]:
        if isinstance(v, dict):
            bad = [k for k, w in v.items() if w < 0]
            if bad or sum(v.values()) <= 0:
                raise ValueError(f"weights must be >= 0 and not all 0 (negative: {bad})")
        elif len(set(map(str, v))) != len(v):
            raise ValueError("values must be distinct")
        return v

    def choices(self) -> tuple[list[Value], np.ndarray]:
        if isinstance(self.values, dict):
            w = np.array(list(self.values.values()), dtype=float)
            return list(self.values), w / w.sum()
        return list(self.values), np.full(len(self.values), 1 / len(self.values))

    def produces(self) -> dict[str, dict[str, Any]]:
        values, _ = self.choices()
        return {self.name: {**_json_type(values), "enum": values}}

    def weights(self) -> dict[str, float]:
        values, p = self.choices()
        return {str(v): float(w) for v, w in zip(values, p, strict=True)}


@register("category", CategoryParams)
def fill_category(params: CategoryParams, rows: list[Row], ctx: ColumnContext) -> list[Row]:
    values, p = params.choices()
    for row in rows:
        rng = np.random.default_rng(draw_seed(ctx.seed, ctx.round_index, row, params.name))
        row.values[params.name] = values[int(rng.choice(len(values), p=p))]
    return rows


class SubcategoryParams(ColumnParams):
    """Values that depend on another column: `category: topic` and, for each value of topic, a list or weights."""

    category: str
    values: dict[str, list[Value] | dict[str, float]] = Field(min_length=1)

    def reads(self) -> list[str]:
        return [self.category]

    def _options(self, parent: Any) -> CategoryParams | None:
        options = self.values.get(str(parent))
        return None if options is None else CategoryParams(name=self.name, type="category", values=options)

    def produces(self) -> dict[str, dict[str, Any]]:
        every = [v for k in self.values for v in self._options(k).choices()[0]]
        return {self.name: _json_type(every)}


@register("subcategory", SubcategoryParams)
def fill_subcategory(params: SubcategoryParams, rows: list[Row], ctx: ColumnContext) -> list[Row]:
    for row in rows:
        parent = row.values.get(params.category)
        options = params._options(parent)
        if options is None:
            row.error = (
                f"column {params.name}: no values for {params.category}={parent!r}; "
                f"values are given for {sorted(params.values)}"
            )
            continue
        values, p = options.choices()
        rng = np.random.default_rng(draw_seed(ctx.seed, ctx.round_index, row, params.name))
        row.values[params.name] = values[int(rng.choice(len(values), p=p))]
    return rows


class UniformParams(ColumnParams):
    low: float
    high: float
    integer: bool = False  # whole numbers in [low, high]
    decimals: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _range(self) -> UniformParams:
        if self.high < self.low:
            raise ValueError(f"high ({self.high}) is below low ({self.low})")
        return self

    def produces(self) -> dict[str, dict[str, Any]]:
        return {self.name: {"type": "integer" if self.integer else "number"}}


@register("uniform", UniformParams)
def fill_uniform(params: UniformParams, rows: list[Row], ctx: ColumnContext) -> list[Row]:
    for row in rows:
        rng = np.random.default_rng(draw_seed(ctx.seed, ctx.round_index, row, params.name))
        if params.integer:
            v: Any = int(rng.integers(int(np.ceil(params.low)), int(np.floor(params.high)) + 1))
        else:
            v = float(rng.uniform(params.low, params.high))
            v = round(v, params.decimals) if params.decimals is not None else v
        row.values[params.name] = v
    return rows


class NormalParams(ColumnParams):
    mean: float = 0.0
    stddev: float = Field(default=1.0, gt=0)
    min: float | None = None  # draws are clipped to [min, max]
    max: float | None = None
    decimals: int | None = Field(default=None, ge=0)

    def produces(self) -> dict[str, dict[str, Any]]:
        return {self.name: {"type": "number"}}


@register("normal", NormalParams)
def fill_normal(params: NormalParams, rows: list[Row], ctx: ColumnContext) -> list[Row]:
    for row in rows:
        rng = np.random.default_rng(draw_seed(ctx.seed, ctx.round_index, row, params.name))
        v = float(np.clip(rng.normal(params.mean, params.stddev), params.min, params.max))
        row.values[params.name] = round(v, params.decimals) if params.decimals is not None else v
    return rows


class SampleParams(ColumnParams):
    """Values drawn from a column of a dataset: a local path (relative to the spec), any fsspec URL, or hf://."""

    source: str
    column: str
    format: Literal["jsonl", "csv", "parquet"] | None = None
    split: str = "train"

    def produces(self) -> dict[str, dict[str, Any]]:
        return {self.name: {"type": "string"}}


@register("sample", SampleParams)
def fill_sample(params: SampleParams, rows: list[Row], ctx: ColumnContext) -> list[Row]:
    key = f"sample:{params.source}:{params.split}:{params.column}"
    if key not in ctx.memo:
        table = load_table(
            DataSourceSpec(source=params.source, format=params.format, split=params.split), ctx.base_dir
        )
        if params.column not in table.columns:
            raise ValueError(
                f"column {params.name}: {params.source} has no column {params.column!r}; "
                f"it has {sorted(map(str, table.columns))}"
            )
        ctx.memo[key] = [str(v) for v in table[params.column].dropna().tolist()]
        if not ctx.memo[key]:
            raise ValueError(f"column {params.name}: column {params.column!r} of {params.source} is empty")
    values = ctx.memo[key]
    for row in rows:
        rng = np.random.default_rng(draw_seed(ctx.seed, ctx.round_index, row, params.name))
        row.values[params.name] = values[int(rng.integers(len(values)))]
    return rows
