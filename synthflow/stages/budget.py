"""Token and money budgets (`generate.budget`): what a round has spent, and whether it must stop.

A round is charged for every result it uses, whether the request cache served it or a generator: a resumed or
re-verified round then stops exactly where the uninterrupted one did, and each request was paid once, when it was
sent. LLM verifiers' calls (judges, self-consistency) are charged to the generator they call.

The pipeline's spend before round r is what rounds 1..r-1 recorded in their coverage version's meta (`SPEND_META`),
read back, never recomputed; a re-materialized round replaces its own record, so nothing is counted twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from synthflow.generators.base import GenerationRequest, GenerationResult, Generator, GeneratorWrapper
from synthflow.spec import PipelineSpec, Price
from synthflow.store import Store

SPEND_META = "spend"  # coverage version-record meta: {"prompt_tokens", "completion_tokens", "usd"}
PIPELINE_BUDGET_CHECK = "pipeline_budget"

# Stop reasons, in the order they are tested (the round's own limits first).
MAX_TOKENS = "max_tokens"
MAX_USD = "max_usd"
PIPELINE_MAX_TOKENS = "pipeline_max_tokens"
PIPELINE_MAX_USD = "pipeline_max_usd"


@dataclass(frozen=True)
class Spend:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usd: float = 0.0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Spend) -> Spend:
        return Spend(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.usd + other.usd,
        )

    def as_meta(self) -> dict[str, Any]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens, "usd": self.usd}

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any] | None) -> Spend:
        meta = meta or {}
        return cls(int(meta.get("prompt_tokens", 0)), int(meta.get("completion_tokens", 0)), float(meta.get("usd", 0)))


def round_spend(coverage: Mapping[str, Any]) -> Spend:
    """What a round's coverage (BudgetMeter.report) says the round spent."""
    return Spend(
        int(coverage.get("round_prompt_tokens", 0)),
        int(coverage.get("round_completion_tokens", 0)),
        float(coverage.get("round_cost_usd", 0.0)),
    )


def recorded_spend(store: Store, store_name: str, partitions: Sequence[str]) -> Spend:
    """The sum of what the latest coverage version of each of `partitions` recorded (rounds without one: 0)."""
    total = Spend()
    for part in partitions:
        rec = store.latest(store_name, "coverage", part)
        if rec is not None:
            total = total + Spend.from_meta(rec.meta.get(SPEND_META))
    return total


class BudgetMeter:
    """The running spend of one round, per profile generator, against the round's and the pipeline's limits."""

    def __init__(self, spec: PipelineSpec, prices: Mapping[str, Price] | None = None, before: Spend | None = None):
        self.spec = spec
        self.prices = dict(prices or {})
        self.before = before or Spend()  # what earlier rounds recorded
        self.by_generator: dict[str, Spend] = {}
        self._columns_seen: dict[str, tuple[int, int]] = {}

    def charge(self, generator: str, prompt_tokens: int, completion_tokens: int) -> None:
        usd = self.prices.get(generator, Price()).cost(prompt_tokens, completion_tokens)
        self.by_generator[generator] = self.by_generator.get(generator, Spend()) + Spend(
            int(prompt_tokens), int(completion_tokens), usd
        )

    def charge_batch(self, candidates: pd.DataFrame, column_stats: Mapping[str, Any] | None = None) -> None:
        """One batch of generation: the candidates' own token columns, or, for a column DAG, what each llm column
        added since the last batch, at the price of the column's generator."""
        if column_stats is None:
            if len(candidates) and "prompt_tokens" in candidates:
                self.charge(
                    self.spec.generate.generator,
                    int(candidates["prompt_tokens"].sum()),
                    int(candidates["completion_tokens"].sum()),
                )
            return
        default = self.spec.generate.generator
        owners = {c.name: (c.checked().generators() or [default])[0] for c in self.spec.generate.columns or ()}
        for name, st in column_stats.items():
            seen = self._columns_seen.get(name, (0, 0))
            now = (st.prompt_tokens, st.completion_tokens)
            if now != seen:
                self.charge(owners.get(name, self.spec.generate.generator), now[0] - seen[0], now[1] - seen[1])
                self._columns_seen[name] = now

    @property
    def round(self) -> Spend:
        total = Spend()
        for s in self.by_generator.values():
            total = total + s
        return total

    @property
    def pipeline(self) -> Spend:
        return self.before + self.round

    def stop_reason(self) -> str | None:
        """The first limit reached (spent >= limit), or None while every limit has room."""
        b, rnd, pipe = self.spec.generate.budget, self.round, self.pipeline
        for reason, limit, spent in (
            (MAX_TOKENS, b.round.max_tokens, rnd.tokens),
            (MAX_USD, b.round.max_usd, rnd.usd),
            (PIPELINE_MAX_TOKENS, b.pipeline.max_tokens, pipe.tokens),
            (PIPELINE_MAX_USD, b.pipeline.max_usd, pipe.usd),
        ):
            if limit is not None and spent >= limit:
                return reason
        return None

    def stop_detail(self, reason: str) -> str:
        b = self.spec.generate.budget
        limits = {
            MAX_TOKENS: (b.round.max_tokens, f"the round used {self.round.tokens:,} tokens"),
            MAX_USD: (b.round.max_usd, f"the round cost ${self.round.usd:.4f}"),
            PIPELINE_MAX_TOKENS: (b.pipeline.max_tokens, f"the pipeline used {self.pipeline.tokens:,} tokens"),
            PIPELINE_MAX_USD: (b.pipeline.max_usd, f"the pipeline cost ${self.pipeline.usd:.4f}"),
        }
        limit, spent = limits[reason]
        where = reason.replace("pipeline_", "pipeline.") if reason.startswith("pipeline_") else f"round.{reason}"
        return f"{spent}, reaching generate.budget.{where} = {limit}"

    def metered(self, name: str, generator: Generator) -> Generator:
        """`generator` (one with the cache in front, as verifiers get it) charging each result it hands out."""
        return _Metered(generator, self, name)

    def report(self) -> dict[str, Any]:
        """The round's and the pipeline's spend, for p/coverage (and its metadata)."""
        rnd, pipe, b = self.round, self.pipeline, self.spec.generate.budget
        limits = {
            f"{scope}_{k}": v
            for scope, lim in (("round", b.round), ("pipeline", b.pipeline))
            for k, v in lim.model_dump().items()
            if v is not None
        }
        return {
            "round_prompt_tokens": rnd.prompt_tokens,
            "round_completion_tokens": rnd.completion_tokens,
            "round_tokens": rnd.tokens,
            "round_cost_usd": round(rnd.usd, 6),
            "pipeline_tokens": pipe.tokens,
            "pipeline_cost_usd": round(pipe.usd, 6),
            "cost_by_generator": {
                n: {"prompt_tokens": s.prompt_tokens, "completion_tokens": s.completion_tokens, "usd": round(s.usd, 6)}
                for n, s in sorted(self.by_generator.items())
            },
            **({"budget": limits} if limits else {}),
        }

    def progress_text(self) -> str:
        text = f"{self.round.tokens:,} tok ${self.round.usd:.4f}"
        b = self.spec.generate.budget.pipeline
        if b.max_usd is not None:
            text += f" (pipeline ${self.pipeline.usd:.4f}/${b.max_usd:g})"
        elif b.max_tokens is not None:
            text += f" (pipeline {self.pipeline.tokens:,}/{b.max_tokens:,} tok)"
        return text

    def announce(self, progress: Callable[..., Any] | None) -> None:
        """Show the running cost beside a progress reporter that takes notes (synthflow.progress.Reporter)."""
        note = getattr(progress, "note", None)
        if note is not None:
            note(self.progress_text())


class _Metered(GeneratorWrapper):
    def __init__(self, wrapped: Generator, meter: BudgetMeter, name: str):
        super().__init__(wrapped)
        self.meter = meter
        self.name = name
        # the raw generator: a column DAG puts the cache in front itself
        self.inner = getattr(wrapped, "inner", wrapped)

    def generate(
        self, requests: Iterable[GenerationRequest], progress: Callable[[int, int], None] | None = None
    ) -> Iterator[tuple[GenerationRequest, GenerationResult]]:
        for req, res in self.wrapped.generate(requests, progress=progress):
            self.meter.charge(self.name, res.prompt_tokens, res.completion_tokens)
            yield req, res


def pipeline_budget_check(spec: PipelineSpec, coverage: Mapping[str, Any]) -> tuple[bool, dict[str, Any]] | None:
    """(passed, metadata) of the pipeline_budget check: the pipeline's total so far within generate.budget.pipeline;
    None when the spec sets no pipeline limit."""
    lim = spec.generate.budget.pipeline
    if lim.max_tokens is None and lim.max_usd is None:
        return None
    tokens, usd = int(coverage.get("pipeline_tokens", 0)), float(coverage.get("pipeline_cost_usd", 0.0))
    over = []
    if lim.max_tokens is not None and tokens > lim.max_tokens:
        over.append(f"{tokens:,} tokens > max_tokens {lim.max_tokens:,}")
    if lim.max_usd is not None and usd > lim.max_usd:
        over.append(f"${usd:.4f} > max_usd ${lim.max_usd:g}")
    meta = {
        "pipeline_tokens": tokens,
        "pipeline_cost_usd": usd,
        **{f"max_{k}": v for k, v in (("tokens", lim.max_tokens), ("usd", lim.max_usd)) if v is not None},
        "over": "; ".join(over) or "none",
    }
    return not over, meta
