"""`synthflow preview`: a few rows generated and verified with nothing materialized, and what a full round costs.

The preview is one light-mode round (stages/session.py): a memory store that holds the seed, `persist=False`, no
checks, no plots, the cache dropped. The profile's store and the Dagster instance are never touched. Its measured
rates (acceptance, tokens and seconds per candidate, the profile's prices) scale to the spec's rows_per_round.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from synthflow.generators.base import Generator
from synthflow.spec import PipelineSpec, Price
from synthflow.stages.accumulate import real_rows
from synthflow.stages.schema import column_failures, describe_failure
from synthflow.stages.seed import load_seed
from synthflow.stages.session import RoundReads, RoundSession
from synthflow.store import Store


class PreviewError(ValueError):
    """The preview cannot run (a seed that fails its schema); the message names the source, row and column."""


@dataclass(frozen=True)
class Estimate:
    """A full round at the preview's measured rates."""

    rows_wanted: int
    acceptance_rate: float
    candidates: int  # candidates the round is expected to generate (capped by the candidate budget)
    expected_rows: int
    requests: int
    tokens: int
    usd: float
    seconds: float
    stops_at: str  # which limit ends the round first: rows, candidate_budget, max_tokens, max_usd

    def lines(self) -> list[str]:
        rate = f"{self.acceptance_rate:.0%}"
        return [
            f"estimate for a full round ({self.rows_wanted} rows wanted, acceptance {rate} in the preview):",
            f"  candidates  {self.candidates:,} (expected accepted rows: {self.expected_rows:,})",
            f"  requests    {self.requests:,} generation requests",
            f"  tokens      {self.tokens:,} (prompt + completion, LLM verifiers included)",
            f"  time        {_duration(self.seconds)} at the preview's rate",
            f"  cost        ${self.usd:.4f} at the profile's prices",
            f"  stops at    {self.stops_at}",
        ]


@dataclass
class PreviewResult:
    spec: PipelineSpec  # the preview's own (small) spec
    verified: pd.DataFrame  # every candidate with every verdict
    coverage: dict[str, Any]
    requests: int
    seconds: float
    estimate: Estimate


def preview_spec(spec: PipelineSpec, n: int) -> PipelineSpec:
    """The spec asking for `n` rows, with the candidate budget scaled as the spec's own (budget/rows)."""
    g = spec.generate
    cap = max(n, math.ceil(n * g.candidate_limit / g.rows_per_round))
    gen = g.model_copy(update={"rows_per_round": n, "candidate_budget": cap, "batch_size": min(g.batch_size, cap)})
    return spec.model_copy(update={"generate": gen})


def run_preview(
    spec: PipelineSpec,
    *,
    generators: Mapping[str, Callable[[], Generator]],
    embedder: Callable[[], Any] | None = None,
    prices: Mapping[str, Price] | None = None,
    n: int = 5,
    log: Callable[[str], None] = lambda msg: None,
) -> PreviewResult:
    small = preview_spec(spec, n)
    seed = load_seed(spec.seed, spec.base_dir)
    failures = column_failures(seed, spec.seed.columns)
    if failures:
        raise PreviewError(f"{spec.seed.source}: {describe_failure(failures[0])} (and {len(failures) - 1} more)")
    # Nothing lands anywhere: the round's request cache lives in memory and is dropped after it.
    store = Store(f"memory://synthflow-preview-{uuid.uuid4().hex}")
    # Round 1's reads as `RoundSession.load` makes them, with the seed as the only real data.
    real = real_rows(seed, [c.name for c in spec.seed.columns], 0)
    session = RoundSession(
        small, store, spec.name, ["preview"], log=log, persist=False, checks=(), plots=False, keep_cache=False
    )
    # Loading the model is not part of a round's rate: create the main generator before the clock starts.
    main = generators[spec.generate.generator]()
    factories = {**generators, spec.generate.generator: lambda: main}
    start = time.perf_counter()
    result = session.run(RoundReads(seed, real, None, None), generators=factories, embedder=embedder, prices=prices)
    seconds = time.perf_counter() - start
    out = result.output
    requests = result.stats.requested
    return PreviewResult(
        small,
        out.verified,
        result.coverage,
        requests,
        seconds,
        estimate_round(spec, len(out.verified), _passed(out.verified), requests, result.coverage, seconds),
    )


def estimate_round(
    spec: PipelineSpec, candidates: int, accepted: int, requests: int, coverage: Mapping[str, Any], seconds: float
) -> Estimate:
    """Scale the preview's per-candidate rates to a round of `spec`, which stops at the first limit it reaches."""
    g, lim = spec.generate, spec.generate.budget.round
    per = max(candidates, 1)
    rate = accepted / per
    tokens_per, usd_per = coverage.get("round_tokens", 0) / per, coverage.get("round_cost_usd", 0.0) / per
    needed = math.ceil(g.rows_per_round / rate) if rate > 0 else math.inf
    stops = {"rows": needed, "candidate_budget": g.candidate_limit}
    if lim.max_tokens is not None and tokens_per > 0:
        stops["max_tokens"] = math.ceil(lim.max_tokens / tokens_per)
    if lim.max_usd is not None and usd_per > 0:
        stops["max_usd"] = math.ceil(lim.max_usd / usd_per)
    stops_at = min(stops, key=lambda k: stops[k])
    n = int(stops[stops_at])
    return Estimate(
        rows_wanted=g.rows_per_round,
        acceptance_rate=rate,
        candidates=n,
        expected_rows=min(g.rows_per_round, math.floor(n * rate)),
        requests=math.ceil(n * requests / per),
        tokens=round(n * tokens_per),
        usd=n * usd_per,
        seconds=n * seconds / per,
        stops_at=stops_at,
    )


def format_preview(result: PreviewResult, verifier_names: list[str], columns: list[str]) -> str:
    """Each candidate with its fields and every verifier's verdict, then the round's spend and the estimate."""
    v = result.verified
    lines = [f"preview: {len(v)} candidates, {int(v['accepted'].sum()) if len(v) else 0} accepted"]
    for i, (_, row) in enumerate(v.iterrows(), start=1):
        verdict = "ACCEPTED" if row["accepted"] else f"REJECTED by {row['rejected_by']}"
        lines.append(f"\n#{i} {verdict}")
        for c in columns:
            if c in v.columns and not _missing(row[c]):
                lines.append(f"  {c}: {_short(row[c])}")
        if not _missing(row.get("parse_error")):
            lines.append(f"  parse: rejected: {_short(row['parse_error'])}")
        skipped = [name for name in verifier_names if _missing(row.get(f"{name}_ok"))]
        for name in verifier_names:
            ok = row.get(f"{name}_ok")
            if not _missing(ok):
                reason = row.get(f"{name}_reason")
                why = "" if _missing(reason) else f": {_short(reason)}"
                lines.append(f"  {name}: {'accepted' if bool(ok) else 'rejected'}{why}")
        if skipped:
            lines.append(f"  not run (an earlier step rejected the row): {', '.join(skipped)}")
    cov = result.coverage
    lines += [
        "",
        f"preview spend: {cov.get('round_tokens', 0):,} tokens, ${cov.get('round_cost_usd', 0.0):.4f}, "
        f"{result.requests} generation requests in {_duration(result.seconds)}",
        *result.estimate.lines(),
        "nothing was written: no store table, no Dagster run",
    ]
    return "\n".join(lines)


def _passed(verified: pd.DataFrame) -> int:
    """Candidates that passed every verifier, those past the preview's small quota included: the acceptance rate."""
    if not len(verified):
        return 0
    return int((verified["accepted"] | (verified["rejected_by"] == "quota")).sum())


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def _short(value: Any, width: int = 160) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
