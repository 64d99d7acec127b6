"""What every column type provides: a parameter model (checked when the spec loads) and a function that fills the
column for a batch of rows.

A column type registers under its `type:` name in `synthflow.registry.columns`, like verifier types; plugins come
through the `synthflow.columns` entry points. The spec asks the registry for the parameter model by name, so adding
a column type never touches spec.py.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from synthflow import registry
from synthflow.generators.base import Generator
from synthflow.stages.cache import ResultCache
from synthflow.stages.generate import GenerationStats


class ColumnParams(BaseModel):
    """One entry of `generate.columns`. Subclasses add their keys; unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    type: str

    def templates(self) -> dict[str, str]:
        """The Jinja templates of this column by field name: their free names are its dependencies."""
        return {}

    def reads(self) -> list[str]:
        """Columns it reads outside templates (a subcategory's parent, an evolved column)."""
        return []

    def produces(self) -> dict[str, dict[str, Any]]:
        """The table columns it fills, each with its JSON schema (the row schema the verifiers check)."""
        return {self.name: {"type": "string"}}

    def fields(self) -> list[str] | None:
        """The fields templates may read as `{{ name.field }}` (structured columns); None: a plain value."""
        return None

    def generators(self) -> list[str]:
        """Profile generators it calls."""
        return []

    def weights(self) -> dict[str, float] | None:
        """Configured shares of its values (category samplers): the round reports the drawn shares against them."""
        return None


@dataclass
class Row:
    """One candidate row being filled: its values so far and where it came from."""

    round_index: int
    index: int  # the candidate index of the prompt row (shared by the n samples of a fan-out)
    path: tuple[int, ...] = ()  # sample index at each fan-out so far; () before any
    values: dict[str, Any] = field(default_factory=dict)  # what templates see
    error: str | None = None  # set by the first column that failed; later columns skip the row
    provenance: dict[str, dict[str, Any]] = field(
        default_factory=dict
    )  # per llm column: model, prompt hash, key
    target_cluster: int = -1
    exemplars: list[dict] = field(default_factory=list)
    exemplar_ids: list[str] = field(default_factory=list)
    parent: str | None = None  # the id of the row this one was sampled from (n > 1)
    hidden: set[str] = field(default_factory=set)  # columns kept out of what verifiers see
    originals: dict[str, Any] = field(
        default_factory=dict
    )  # generated values before typing (what verifiers judge)
    raw: dict[str, str] = field(default_factory=dict)  # per llm column: the completion as it came back
    messages: dict[str, list] = field(default_factory=dict)  # per llm column: what was sent
    tokens: list[int] = field(
        default_factory=lambda: [0, 0]
    )  # prompt, completion tokens over its llm columns
    finish_reason: str | None = None

    def child(self, sample_index: int) -> Row:
        """Sample `sample_index` of a fan-out: its own row, naming this one as its parent."""
        return Row(
            round_index=self.round_index,
            index=self.index,
            path=(*self.path, sample_index),
            values=dict(self.values),
            provenance={k: dict(v) for k, v in self.provenance.items()},
            target_cluster=self.target_cluster,
            exemplars=self.exemplars,
            exemplar_ids=self.exemplar_ids,
            parent=self.id,
            hidden=set(self.hidden),
            originals=dict(self.originals),
            raw=dict(self.raw),
            messages=dict(self.messages),
            tokens=list(self.tokens),
            finish_reason=self.finish_reason,
        )

    @property
    def id(self) -> str:
        return row_id(self.round_index, self.index, self.path)

    def context(self) -> dict[str, Any]:
        """The names a template of this row is rendered with."""
        nested: dict[str, Any] = {}
        for k, v in self.values.items():
            if "." in k:
                head, tail = k.split(".", 1)
                nested.setdefault(head, {})[tail] = v
            else:
                nested[k] = v
        return {
            **nested,
            "exemplars": self.exemplars,
            "round": self.round_index,
            "cluster": self.target_cluster,
        }


def row_id(round_index: int, index: int, path: tuple[int, ...]) -> str:
    blob = f"row:{round_index}:{index}:{'.'.join(map(str, path))}".encode()
    return hashlib.sha256(blob).hexdigest()[:32]


def draw_seed(base: int, round_index: int, row: Row, column: str) -> list[int]:
    """The seed of one sampler draw: (spec seed, round, row, column), so a resumed round draws the same values."""
    digest = hashlib.sha256(f"{base}:{round_index}:{row.index}:{row.path}:{column}".encode()).digest()
    return [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4)]


@dataclass
class ColumnStats:
    """Per-column figures of a round: what the round's coverage reports under `columns`."""

    type: str
    rows: int = 0  # rows this column was filled for (after its own fan-out)
    failures: int = 0
    requests: int = 0  # samples asked for, cached or not
    from_cache: int = 0
    server_requests: int = 0  # requests sent for the others (one per prompt where the server takes n)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    # Where reasoning_tokens came from: "server" (usage.completion_tokens_details), "estimated" (the reasoning's
    # share of the completion by characters), or both ("server+estimated"); absent with no reasoning.
    reasoning_sources: set[str] = field(default_factory=set)
    models: list[str] = field(default_factory=list)

    def count_reasoning(self, tokens: int, source: str) -> None:
        self.reasoning_tokens += tokens
        self.reasoning_sources.add(source)

    def as_dict(self) -> dict[str, Any]:
        out = {
            k: v
            for k, v in self.__dict__.items()
            if (v or k in ("rows", "failures")) and k != "reasoning_sources"
        }
        if self.reasoning_sources:
            out["reasoning_tokens_source"] = "+".join(sorted(self.reasoning_sources, reverse=True))
        return out


@dataclass
class ColumnContext:
    """What a column's fill function may use."""

    round_index: int
    seed: int  # the spec's base seed (generate.sampling.seed)
    base_dir: Path
    cache: ResultCache
    generator_for: Callable[[str], Generator]  # a profile generator by name (raw: the caller caches)
    default_generator: str
    default_sampling: Any  # the spec's SamplingSpec
    stats: ColumnStats
    generation: GenerationStats  # the round's totals (what p/candidates reports)
    log: Callable[[str], None] = lambda msg: None
    memo: dict[str, Any] = field(default_factory=dict)  # loaded datasets and the like, per round


FillFn = Callable[[ColumnParams, list[Row], ColumnContext], list[Row]]


@dataclass(frozen=True)
class ColumnType:
    params: type[ColumnParams]
    fill: FillFn


def register(type_name: str, params: type[ColumnParams]) -> Callable[[FillFn], FillFn]:
    """Register a column type: `@register("category", CategoryParams)` over its fill function."""

    def deco(fill: FillFn) -> FillFn:
        registry.columns.register(type_name, ColumnType(params, fill))
        return fill

    return deco


def column_type(type_name: str) -> ColumnType:
    return registry.columns.get(type_name)


def checked(entry: Mapping[str, Any]) -> ColumnParams:
    """One `generate.columns` entry as its type's parameter model (pydantic ValidationError when it is wrong)."""
    return column_type(str(entry.get("type"))).params.model_validate(dict(entry))
