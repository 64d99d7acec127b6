"""The `decontaminate` verifier and the blocking training-set check `decontaminated`.

A candidate that copies or paraphrases a row of a benchmark's test set makes every later evaluation on that
benchmark meaningless, so it is rejected with the benchmark, the row it matched and how:

- `ngram`: it shares at least `min_overlap` word n-grams (13 by default, as in the GPT-3 and Llama reports) with
  one benchmark row. Catches copies and light edits, needs no model.
- `embedding`: its nearest benchmark row by cosine of the pipeline's embedder (the spec's `diversity.embedder`)
  is at least `threshold`. Catches paraphrases. With `confirm`, a judge model (a generator of the resource
  profile, through the round's request cache like llm_judge) must agree that it is a copy; the n-gram method is
  never second-guessed.

The check `decontaminated` runs the n-gram method over every row the round adds to the training set, real rows
included (real data is not verified), and is blocking: a training set holding a contaminated row is kept out of
every later round and downstream read. It exists when the chain has a `decontaminate` entry with `check: true`;
`action: check_only` keeps the check and lets every candidate through the chain.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from synthflow.generators.base import GenerationRequest, SamplingParams
from synthflow.spec import PipelineSpec
from synthflow.stages.verifiers.base import Needs, VerifyContext, verdicts
from synthflow.stages.verifiers.benchmarks import (
    NgramIndex,
    ReferenceSpec,
    benchmark_text,
    build_ngram_index,
    load_benchmark,
    row_texts,
    snippet,
)
from synthflow.stages.verifiers.llm_judge import ask, chat, derive_seed, generator_for, parse_json_object
from synthflow.stages.verifiers.registry import VerifierParams, register
from synthflow.templates import TemplateStr

TYPE = "decontaminate"
CHECK_NAME = "decontaminated"

CONFIRM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "rationale": {"type": "string", "maxLength": 400},
        "contaminated": {"type": "boolean"},
    },
    "required": ["rationale", "contaminated"],
    "additionalProperties": False,
}
DEFAULT_CONFIRM_SYSTEM = "You check training data for leaks of benchmark test sets."
DEFAULT_CONFIRM_PROMPT = """Is the CANDIDATE a copy or a paraphrase of the BENCHMARK item? The same problem in other
words, or with names and numbers changed only cosmetically, is a copy; a different problem on the same topic is not.

BENCHMARK ({{ benchmark }} row {{ benchmark_row }}):
{{ reference }}

CANDIDATE:
{{ candidate }}

Reply with JSON only: {"rationale": "...", "contaminated": true or false}"""


class ConfirmParams(BaseModel):
    """The optional LLM confirmation of embedding matches."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    judge: str = "judge"  # generator of the resource profile
    prompt: TemplateStr = DEFAULT_CONFIRM_PROMPT  # sees candidate, reference, benchmark, benchmark_row, cosine
    system: TemplateStr | None = DEFAULT_CONFIRM_SYSTEM
    temperature: float = Field(default=0.0, ge=0)
    max_tokens: int = Field(default=256, ge=16)
    seed: int = 0


class DecontaminateParams(VerifierParams):
    references: list[ReferenceSpec] = Field(min_length=1)
    methods: list[Literal["ngram", "embedding"]] = Field(default=["ngram", "embedding"], min_length=1)
    columns: list[str] | None = None  # row fields checked; default: every declared column with a string value
    n: int = Field(default=13, ge=1)  # n-gram length in words
    min_overlap: int = Field(default=1, ge=1)  # shared n-grams with one benchmark row that make a match
    threshold: float = Field(default=0.85, gt=0, le=1)  # cosine to the nearest benchmark row
    confirm: ConfirmParams | None = None
    action: Literal["reject", "check_only"] = "reject"
    check: bool = True  # the blocking training-set check `decontaminated`

    @field_validator("references")
    @classmethod
    def _names_unique(cls, v: list[ReferenceSpec]) -> list[ReferenceSpec]:
        names = [r.name for r in v]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"benchmark names must be unique: {dupes}")
        return v

    def requires(self) -> Needs:
        embeds = self.action == "reject" and "embedding" in self.methods
        judge = (self.confirm.judge,) if self.confirm is not None and embeds else ()
        return Needs(generators=judge, embedder=embeds)


def checked_columns(spec: PipelineSpec, params: DecontaminateParams) -> list[str]:
    return list(params.columns) if params.columns else [c.name for c in spec.seed.columns]


class _Round:
    """The benchmarks of one verifier, loaded once per round, with their n-gram and embedding indexes."""

    def __init__(self, params: DecontaminateParams, ctx: VerifyContext, name: str):
        self.benchmarks = [load_benchmark(r, ctx.spec.base_dir) for r in params.references]
        self.ngrams: NgramIndex | None = (
            build_ngram_index(self.benchmarks, params.n) if "ngram" in params.methods else None
        )
        self.vectors = None
        self.where: list[tuple[str, int]] = []  # embedding id -> (benchmark, row)
        if "embedding" in params.methods:
            if ctx.embedder is None:
                raise ValueError(
                    f"verifier {name!r} (decontaminate) uses the embedding method and needs an embedder: keep "
                    "`diversity` enabled with an embedder in the resource profile, or set `methods: [ngram]`"
                )
            from synthflow.stages.diversity.index import SimilarityIndex

            self.vectors = SimilarityIndex(ctx.embedder.dim)
            for bench in self.benchmarks:
                rows = [i for i, t in enumerate(bench.texts) if t]
                if rows:
                    vecs = ctx.embedder.encode([bench.texts[i] for i in rows])
                    # Plain int ids (the index keeps ids in a numpy object array); `where` maps them back.
                    self.vectors.add(vecs, range(len(self.where), len(self.where) + len(rows)), "reference")
                    self.where += [(bench.name, i) for i in rows]

    def text(self, benchmark: str, row: int) -> str:
        return benchmark_text(self.benchmarks, benchmark, row)


@register(TYPE, DecontaminateParams)
def decontaminate_verifier(name: str, params: DecontaminateParams):
    def verify(rows: pd.DataFrame, ctx: VerifyContext) -> pd.DataFrame:
        n = len(rows)
        method = np.full(n, None, dtype=object)
        bench = np.full(n, None, dtype=object)
        bench_row = np.full(n, -1, dtype=np.int64)
        cosine = np.full(n, np.nan)
        shared = np.full(n, np.nan)
        reason = np.full(n, None, dtype=object)
        if params.action == "check_only" or n == 0:
            return _frame(rows, reason, method, bench, bench_row, cosine, shared, score=np.full(n, np.nan))
        state: _Round = ctx.state.get(f"{TYPE}:{name}") or ctx.state.setdefault(
            f"{TYPE}:{name}", _Round(params, ctx, name)
        )
        columns = checked_columns(ctx.spec, params)
        score = np.full(n, np.nan)
        if state.ngrams is not None:
            for i, text in enumerate(row_texts(rows, columns)):
                m = state.ngrams.best(text, params.min_overlap)
                if m is None:
                    continue
                method[i], bench[i], bench_row[i], shared[i], score[i] = "ngram", m.benchmark, m.row, m.shared, 1.0
                reason[i] = (
                    f"contaminated: shares {m.shared} {params.n}-gram(s) ({m.fraction:.0%} of that row's) with "
                    f"{m.benchmark} row {m.row}: \"{snippet(state.text(m.benchmark, m.row))}\""
                )
        if state.vectors is not None:
            near = _nearest(state, ctx, rows, columns)
            cosine[:] = np.where(np.isfinite(near.similarity), near.similarity, np.nan)
            hits = [i for i in range(n) if method[i] is None and near.similarity[i] >= params.threshold]
            verdict_of = _confirm(params, ctx, name, state, near, hits) if params.confirm else {}
            for i in hits:
                b, row = state.where[near.id[i]]
                confirmed, note = verdict_of.get(i, (True, ""))
                if not confirmed:
                    continue
                method[i], bench[i], bench_row[i] = "embedding", b, row
                reason[i] = (
                    f"contaminated: nearest {b} row {row} by embedding (cos {near.similarity[i]:.2f} >= "
                    f"{params.threshold:g}){note}: \"{snippet(state.text(b, row))}\""
                )
            score = np.where(np.isnan(score), cosine, score)
        return _frame(rows, reason, method, bench, bench_row, cosine, shared, score)

    verify.name = name
    return verify


def _frame(rows, reason, method, bench, bench_row, cosine, shared, score) -> pd.DataFrame:
    out = verdicts(rows.index, [r is None for r in reason], reason, score=score)
    out["method"] = pd.Series(method, index=rows.index, dtype=object)
    out["benchmark"] = pd.Series(bench, index=rows.index, dtype=object)
    out["benchmark_row"] = pd.array([None if r < 0 else int(r) for r in bench_row], dtype="Int64")
    out["cosine"] = pd.Series(cosine, index=rows.index, dtype=float)
    out["ngram_shared"] = pd.Series(shared, index=rows.index, dtype=float)
    return out


@dataclass
class _Near:
    similarity: np.ndarray  # per row: cosine of its closest field to any benchmark row (-inf: nothing to embed)
    id: np.ndarray  # the embedding id of that benchmark row (-1: none)
    text: list[str]  # the row's field that came closest


def _nearest(state: _Round, ctx: VerifyContext, rows: pd.DataFrame, columns: list[str]) -> _Near:
    """Each field on its own: a question copied next to a long solution must not hide behind the solution."""
    n = len(rows)
    out = _Near(np.full(n, -np.inf, dtype=np.float32), np.full(n, -1, dtype=np.int64), [""] * n)
    pieces = [
        (i, v) for c in columns if c in rows.columns for i, v in enumerate(rows[c].tolist()) if isinstance(v, str) and v
    ]
    if pieces:
        near = state.vectors.nearest(ctx.embedder.encode([v for _, v in pieces]), kinds=("reference",))
        for (i, v), sim, gid in zip(pieces, near.similarity, near.id, strict=True):
            if gid is not None and sim > out.similarity[i]:
                out.similarity[i], out.id[i], out.text[i] = sim, gid, v
    return out


def _confirm(
    params: DecontaminateParams,
    ctx: VerifyContext,
    name: str,
    state: _Round,
    near: _Near,
    hits: list[int],
) -> dict[int, tuple[bool, str]]:
    """(contaminated?, note for the reason) per embedding hit, as the judge sees it."""
    if not hits:
        return {}
    confirm = params.confirm
    judge = generator_for(ctx, confirm.judge, name)
    sampling = SamplingParams(temperature=confirm.temperature, top_p=1.0, max_tokens=confirm.max_tokens)
    requests = []
    for pos, i in enumerate(hits):
        b, row = state.where[near.id[i]]
        context = {
            "candidate": near.text[i],
            "reference": state.text(b, row),
            "benchmark": b,
            "benchmark_row": row,
            "cosine": round(float(near.similarity[i]), 3),
        }
        messages = chat(confirm.system, confirm.prompt, context, name)
        seed = derive_seed(confirm.seed, b, row, near.text[i])
        requests.append(GenerationRequest(messages, sampling, seed, 0, CONFIRM_SCHEMA, meta={"row": pos}))
    results = ask(judge, requests)
    out = {}
    for pos, i in enumerate(hits):
        res = results[pos][0]
        obj = parse_json_object(res.text) if not res.error else None
        flag = obj.get("contaminated") if obj else None
        if not isinstance(flag, bool):
            # Unreadable: the embedding match stands (a leak must not pass because the judge failed).
            why = f"judge request failed: {res.error}" if res.error else "judge output unparseable"
            out[i] = (True, f", not confirmed ({why})")
            continue
        rationale = obj.get("rationale")
        rationale = rationale.strip() if isinstance(rationale, str) else ""
        out[i] = (flag, f", confirmed by {confirm.judge}: {rationale}" if rationale else f", confirmed by {confirm.judge}")
    return out


# ---- the training-set check ------------------------------------------------------------------------------------


def checked_verifiers(spec: PipelineSpec) -> list[tuple[str, DecontaminateParams]]:
    """The decontaminate entries whose blocking check guards the training set."""
    out = []
    for v in spec.verify:
        if v.type == TYPE:
            params = v.checked_params()
            if params.check:
                out.append((v.label, params))
    return out


def has_check(spec: PipelineSpec) -> bool:
    return bool(checked_verifiers(spec))


def training_set_check(
    spec: PipelineSpec, previous: pd.DataFrame | None, training_set: pd.DataFrame
) -> tuple[bool, dict[str, Any]] | None:
    """(passed, metadata) of the n-gram decontamination of every row the round adds (real rows included);
    None when no decontaminate entry asks for the check."""
    configs = checked_verifiers(spec)
    if not configs:
        return None
    old: Collection[str] = set(previous["_id"]) if previous is not None and len(previous) else set()
    new = training_set[~training_set["_id"].isin(old)] if old else training_set
    hits: dict[str, str] = {}
    for _label, params in configs:
        benchmarks = [load_benchmark(r, spec.base_dir) for r in params.references]
        index = build_ngram_index(benchmarks, params.n)
        sources = new["_source"] if "_source" in new else pd.Series("?", index=new.index)
        for rid, src, text in zip(new["_id"], sources, row_texts(new, checked_columns(spec, params)), strict=True):
            if rid in hits:
                continue
            m = index.best(text, params.min_overlap)
            if m is not None:
                hits[rid] = (
                    f"{src} row {rid} shares {m.shared} {params.n}-gram(s) with {m.benchmark} row {m.row}: "
                    f"\"{snippet(index.text_of(m.benchmark, m.row))}\""
                )
    return not hits, {
        "checked_rows": len(new),
        "contaminated_rows": len(hits),
        "benchmarks": ", ".join(r.name for _, p in configs for r in p.references),
        "method": "n-gram overlap",
        "examples": "; ".join(list(hits.values())[:10]) or "none",
    }
