"""Preference columns (DPO pairs): k responses to a prompt from one or more generators, each scored by a judge
with a rubric; the best and the worst become chosen and rejected, with both scores and the margin. A pair whose
margin is below `min_margin` (a tie) rejects the row.

Fields (columns `<name>.<field>`): prompt, chosen, rejected, chosen_score, rejected_score, margin, chosen_model,
rejected_model.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import Field

from synthflow.stages.columns.base import ColumnContext, Row, register
from synthflow.stages.columns.llm import (
    WithSampling,
    answer_text,
    ask,
    column_seed,
    request,
    sampling_for_dict,
)
from synthflow.stages.prompts import prompt_hash
from synthflow.templates import TemplateError, TemplateStr, render
from synthflow.text import load_generated_json

SCORE_SCHEMA = {
    "type": "object",
    "properties": {"score": {"type": "integer", "minimum": 1, "maximum": 10}},
    "required": ["score"],
}
DEFAULT_RUBRIC = (
    "Rate the response to the instruction from 1 (useless or wrong) to 10 (correct, complete, clear).\n\n"
    'Instruction:\n{{ prompt }}\n\nResponse:\n{{ response }}\n\nReply with JSON: {"score": <1-10>}.'
)
FIELDS = (
    "prompt",
    "chosen",
    "rejected",
    "chosen_score",
    "rejected_score",
    "margin",
    "chosen_model",
    "rejected_model",
)


class PreferenceParams(WithSampling):
    prompt: TemplateStr  # the instruction the responses answer; rendered with the row's columns
    system: TemplateStr | None = None
    # One generator or several (responses go round-robin over them); generate.generator when left out.
    generator: str | list[str] | None = None
    k: int = Field(default=2, ge=2, le=16)
    judge: str | None = None  # the generator that scores; generate.generator when left out
    rubric: TemplateStr = DEFAULT_RUBRIC  # sees prompt, response and the row's columns
    min_margin: float = Field(default=1.0, ge=0)

    def templates(self) -> dict[str, str]:
        return {k: v for k, v in (("prompt", self.prompt), ("system", self.system)) if v}

    def fields(self) -> list[str]:
        return list(FIELDS)

    def produces(self) -> dict[str, dict[str, Any]]:
        kinds = {"chosen_score": "number", "rejected_score": "number", "margin": "number"}
        return {f"{self.name}.{f}": {"type": kinds.get(f, "string")} for f in FIELDS}

    def responders(self, default: str) -> list[str]:
        if self.generator is None:
            return [default]
        return [self.generator] if isinstance(self.generator, str) else list(self.generator)

    def generators(self) -> list[str]:
        names = [] if self.generator is None else self.responders("")
        return [*names, *([self.judge] if self.judge else [])]


def _score(text: str) -> float | None:
    try:
        obj = load_generated_json(answer_text(text))
        value = obj.get("score") if isinstance(obj, dict) else None
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
    except json.JSONDecodeError:
        return None


@register("preference", PreferenceParams)
def fill_preference(params: PreferenceParams, rows: list[Row], ctx: ColumnContext) -> list[Row]:
    sampling = sampling_for_dict(params.sampling, ctx)
    gens = params.responders(ctx.default_generator)
    prompts: dict[int, str] = {}
    hashes: dict[int, str] = {}
    by_gen: dict[str, list[tuple[int, int, Any]]] = {}
    for i, row in enumerate(rows):
        try:
            ctx_row = row.context()
            prompts[i] = render(params.prompt, **ctx_row)
            msgs = (("system", render(params.system, **ctx_row)),) if params.system else ()
        except TemplateError as e:
            row.error = f"column {params.name}: {e}"
            continue
        msgs = (*msgs, ("user", prompts[i]))
        hashes[i] = prompt_hash(msgs)
        seed = column_seed(ctx.seed, ctx.round_index, row, params.name)
        for j in range(params.k):
            g = gens[j % len(gens)]
            by_gen.setdefault(g, []).append(
                (i, j, request(msgs, sampling, seed, sample_index=j, column=params.name))
            )
    responses: dict[tuple[int, int], tuple[str, str] | None] = {}
    for g, items in by_gen.items():
        for (i, j, _), res in zip(items, ask(ctx, g, [r for _, _, r in items]), strict=True):
            rows[i].tokens[0] += res.prompt_tokens
            rows[i].tokens[1] += res.completion_tokens
            responses[(i, j)] = None if res.error else (answer_text(res.text), res.model)
    judged: list[tuple[int, int, Any]] = []
    for (i, j), resp in responses.items():
        if resp is None:
            continue
        context = {**rows[i].context(), "prompt": prompts[i], "response": resp[0]}
        msgs = (("user", render(params.rubric, **context)),)
        seed = column_seed(ctx.seed, ctx.round_index, rows[i], f"{params.name}:judge")
        judged.append(
            (i, j, request(msgs, sampling, seed, sample_index=j, schema=SCORE_SCHEMA, column=params.name))
        )
    scores: dict[tuple[int, int], float | None] = {}
    for (i, j, _), res in zip(judged, ask(ctx, params.judge, [r for _, _, r in judged]), strict=True):
        rows[i].tokens[0] += res.prompt_tokens
        rows[i].tokens[1] += res.completion_tokens
        scores[(i, j)] = None if res.error else _score(res.text)
    for i in prompts:
        row = rows[i]
        scored = [(scores[(i, j)], j) for j in range(params.k) if scores.get((i, j)) is not None]
        if len(scored) < 2:
            row.error = (
                f"column {params.name}: fewer than 2 of {params.k} responses were generated and scored"
            )
            continue
        scored.sort(key=lambda s: (-s[0], s[1]))
        (best, bj), (worst, wj) = scored[0], scored[-1]
        margin = best - worst
        chosen, rejected = responses[(i, bj)], responses[(i, wj)]
        values = {
            "prompt": prompts[i], "chosen": chosen[0], "rejected": rejected[0], "chosen_score": best,
            "rejected_score": worst, "margin": margin, "chosen_model": chosen[1], "rejected_model": rejected[1],
        }  # fmt: skip
        for f, v in values.items():
            row.values[f"{params.name}.{f}"] = v
        models = sorted({responses[(i, j)][1] for _, j in scored})
        row.provenance[params.name] = {"model": ", ".join(models), "prompt_hash": hashes[i]}
        row.raw[params.name] = json.dumps({"scores": [s for s, _ in sorted(scored, key=lambda s: s[1])]})
        if margin < params.min_margin:
            row.error = (
                f"column {params.name}: a tie: margin {margin:g} is below min_margin {params.min_margin:g}"
            )
    return rows
