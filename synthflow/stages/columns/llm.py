"""LLM columns: a prompt over earlier columns sent to a profile generator; text, or a JSON object whose fields
become the columns `<name>.<field>` (templates read them as `{{ name.field }}`).

Every request goes through the round's request cache (run_generation), so a killed round resumes column by column.
`n > 1` asks for n samples per row (sample_index 0..n-1, each cached under its own key): backends whose server takes
`n` (vllm, openai: supports_n) send one request per row, the others n seeded requests. Each sample is its own row
naming its parent. With `reasoning: true` a leading `<think>...</think>` block (or a server's reasoning_content,
which the openai backend returns that way) goes to `<name>__reasoning`: stored with the row, left out of the
answer, of `_output` (what the schema verifier checks) and of `_text`. Reasoning tokens are the server's figure
where it reports one (usage.completion_tokens_details.reasoning_tokens), else estimated; the column's stats say
which (`reasoning_tokens_source`).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import Field, field_validator, model_validator

from synthflow.generators.base import GenerationRequest, GenerationResult, SamplingParams
from synthflow.spec import SamplingSpec
from synthflow.stages.columns.base import ColumnContext, ColumnParams, Row, register
from synthflow.stages.generate import GenerationStats, run_generation
from synthflow.stages.parse import _column_value
from synthflow.stages.prompts import prompt_hash, to_sampling
from synthflow.templates import TemplateError, TemplateStr, render
from synthflow.text import load_generated_json, split_reasoning

REASONING_SUFFIX = "__reasoning"


class WithSampling(ColumnParams):
    """Column types that call generators: `sampling:` takes keys of generate.sampling, over its values."""

    sampling: dict[str, Any] = Field(default_factory=dict)

    @field_validator("sampling")
    @classmethod
    def _sampling_keys(cls, v: dict[str, Any]) -> dict[str, Any]:
        SamplingSpec(**v)  # unknown keys and bad values fail here, with the key named
        return v


class LLMParams(WithSampling):
    prompt: TemplateStr
    system: TemplateStr | None = None
    output_schema: dict[str, Any] | None = None  # structured: a JSON object schema; text when left out
    generator: str | None = None  # a generator of the profile; generate.generator when left out
    n: int = Field(default=1, ge=1, le=64)
    reasoning: bool = False

    @field_validator("output_schema")
    @classmethod
    def _object_schema(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is None:
            return v
        import jsonschema

        try:
            jsonschema.Draft202012Validator.check_schema(v)
        except jsonschema.SchemaError as e:
            raise ValueError(f"not a valid JSON schema: {e.message}") from None
        if v.get("type") != "object" or not v.get("properties"):
            raise ValueError("output_schema must be an object schema with properties")
        return v

    @model_validator(mode="after")
    def _no_dots(self) -> LLMParams:
        if "." in self.name:
            raise ValueError("an llm column's name may not contain '.' (its fields are named name.field)")
        return self

    def templates(self) -> dict[str, str]:
        return {k: v for k, v in (("prompt", self.prompt), ("system", self.system)) if v}

    def fields(self) -> list[str] | None:
        return list(self.output_schema["properties"]) if self.output_schema else None

    def produces(self) -> dict[str, dict[str, Any]]:
        if self.output_schema:
            out = {f"{self.name}.{k}": dict(s) for k, s in self.output_schema["properties"].items()}
        else:
            out = {self.name: {"type": "string"}}
        if self.reasoning:
            out[self.name + REASONING_SUFFIX] = {"type": ["string", "null"]}
        return out

    def required(self) -> list[str]:
        if self.output_schema:
            return [f"{self.name}.{k}" for k in self.output_schema.get("required", [])]
        return [self.name]

    def generators(self) -> list[str]:
        return [self.generator] if self.generator else []


def sampling_for(params: LLMParams, ctx: ColumnContext) -> SamplingParams:
    return sampling_for_dict(params.sampling, ctx)


def sampling_for_dict(overrides: dict[str, Any], ctx: ColumnContext) -> SamplingParams:
    """A column's `sampling:` keys over generate.sampling."""
    return to_sampling(SamplingSpec(**{**ctx.default_sampling.model_dump(), **overrides}))


def column_seed(base: int, round_index: int, row: Row, column: str) -> int:
    h = hashlib.sha256(f"{base}:{round_index}:{row.index}:{row.path}:{column}".encode()).digest()
    return int.from_bytes(h[:4], "little") & 0x7FFFFFFF


@register("llm", LLMParams)
def fill_llm(params: LLMParams, rows: list[Row], ctx: ColumnContext) -> list[Row]:
    sampling = sampling_for(params, ctx)
    base_seed = int(params.sampling.get("seed", ctx.default_sampling.seed))
    generator = ctx.generator_for(params.generator or ctx.default_generator)
    requests: list[GenerationRequest] = []
    owners: list[tuple[Row, int]] = []
    for row in rows:
        try:
            context = row.context()
            messages = [("user", render(params.prompt, **context))]
            if params.system:
                messages.insert(0, ("system", render(params.system, **context)))
        except TemplateError as e:
            row.error = f"column {params.name}: {e}"
            continue
        msgs = tuple(messages)
        for k in range(params.n):
            requests.append(
                GenerationRequest(
                    messages=msgs,
                    sampling=sampling,
                    seed=column_seed(base_seed, ctx.round_index, row, params.name),
                    sample_index=k,
                    json_schema=params.output_schema,
                    meta={"column": params.name, "prompt_hash": prompt_hash(msgs)},
                )
            )
            owners.append((row, k))
    results, gen_stats = run_generation(requests, generator, ctx.cache) if requests else ([], None)
    if gen_stats is not None:
        _count_requests(ctx, gen_stats)
    if generator.model_id not in ctx.stats.models:
        ctx.stats.models.append(generator.model_id)
    out: list[Row] = [r for r in rows if r.error is not None]
    for req, res, (row, k) in zip(requests, results, owners, strict=True):
        child = row if params.n == 1 else row.child(k)
        _count_tokens(ctx, res)
        child.provenance[params.name] = {
            "model": res.model,
            "prompt_hash": req.meta["prompt_hash"],
            "key": res.key,
            "sample_index": k,
        }
        child.raw[params.name] = res.text
        child.messages[params.name] = [list(m) for m in req.messages]
        child.tokens[0] += res.prompt_tokens
        child.tokens[1] += res.completion_tokens
        child.finish_reason = res.finish_reason
        out.append(child)
        if res.error:
            child.error = f"column {params.name}: generation failed: {res.error}"
            continue
        reasoning, answer = split_reasoning(res.text)
        if params.reasoning:
            child.values[params.name + REASONING_SUFFIX] = reasoning
            child.hidden.add(params.name + REASONING_SUFFIX)
        if params.output_schema is None:
            child.values[params.name] = answer.strip()
            continue
        error = _put_fields(params, answer, child, res.finish_reason)
        if error:
            child.error = f"column {params.name}: {error}"
    return out


def _put_fields(params: LLMParams, answer: str, row: Row, finish: str | None) -> str | None:
    try:
        obj = load_generated_json(answer)
    except json.JSONDecodeError as e:
        cut = " (generation stopped at max_tokens)" if finish == "length" else ""
        return f"output is not valid JSON{cut}: {e.msg}"
    if not isinstance(obj, dict):
        return f"output is JSON {type(obj).__name__}, not an object"
    for field, schema in params.output_schema["properties"].items():
        row.values[f"{params.name}.{field}"] = _column_value(obj.get(field), schema)
        row.originals[f"{params.name}.{field}"] = obj.get(field)
    return None


def ask(
    ctx: ColumnContext,
    generator: str | None,
    requests: list[GenerationRequest],
) -> list[Any]:
    """Results of `requests` from a profile generator, through the request cache, counted in the column's stats.
    What the multi-call column types (conversation, preference, evolve) send with."""
    gen = ctx.generator_for(generator or ctx.default_generator)
    if gen.model_id not in ctx.stats.models:
        ctx.stats.models.append(gen.model_id)
    if not requests:
        return []
    results, st = run_generation(requests, gen, ctx.cache)
    _count_requests(ctx, st)
    for res in results:
        _count_tokens(ctx, res)
    return results


def _count_requests(ctx: ColumnContext, st: GenerationStats) -> None:
    ctx.generation.merge(st)
    ctx.stats.requests += st.requested
    ctx.stats.from_cache += st.from_cache
    ctx.stats.server_requests += st.server_requests


def _count_tokens(ctx: ColumnContext, res: GenerationResult) -> None:
    """A result's tokens in the column's stats; reasoning tokens as the server counted them where it did."""
    ctx.stats.prompt_tokens += res.prompt_tokens
    ctx.stats.completion_tokens += res.completion_tokens
    if res.error:
        return
    if res.reasoning_tokens is not None:
        if res.reasoning_tokens:
            ctx.stats.count_reasoning(res.reasoning_tokens, "server")
        return
    reasoning, _ = split_reasoning(res.text)
    if reasoning is not None and res.completion_tokens:
        # No figure from the server: the reasoning's share of the completion count, by characters.
        ctx.stats.count_reasoning(
            round(res.completion_tokens * len(reasoning) / max(len(res.text), 1)), "estimated"
        )


def request(
    messages: tuple[tuple[str, str], ...],
    sampling: SamplingParams,
    seed: int,
    *,
    sample_index: int = 0,
    schema: dict[str, Any] | None = None,
    column: str,
) -> GenerationRequest:
    return GenerationRequest(
        messages=messages,
        sampling=sampling,
        seed=seed,
        sample_index=sample_index,
        json_schema=schema,
        meta={"column": column, "prompt_hash": prompt_hash(messages)},
    )


def answer_text(text: str) -> str:
    """A completion without its reasoning block."""
    return split_reasoning(text)[1].strip()
