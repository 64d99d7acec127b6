"""Evolve columns (Evol-Instruct): rewrite an earlier column with evolution operators, keeping the original beside
it. Each step applies one operator, drawn seeded by (spec seed, round, row); `<name>__operators` records which.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field

from synthflow.stages.columns.base import ColumnContext, Row, draw_seed, register
from synthflow.stages.columns.llm import (
    WithSampling,
    answer_text,
    ask,
    column_seed,
    request,
    sampling_for_dict,
)
from synthflow.stages.prompts import prompt_hash

Operator = Literal["add_constraints", "deepen", "concretize", "increase_reasoning", "breadth"]

# The operators of Evol-Instruct (WizardLM): in-depth (the first four) and in-breadth evolution.
OPERATORS: dict[str, str] = {
    "add_constraints": "Add one more constraint or requirement to it.",
    "deepen": "Make it ask about the topic in more depth.",
    "concretize": "Replace general concepts with more specific, concrete ones.",
    "increase_reasoning": "Rewrite it so that answering it clearly needs several reasoning steps.",
    "breadth": "Write a new one in the same domain, on a rarer topic, of the same length and difficulty.",
}
TEMPLATE = (
    "Rewrite the following instruction into a more complex version that a person can still understand and answer. "
    "{operator}\nReply with the rewritten instruction only.\n\n#Instruction#:\n{text}"
)


class EvolveParams(WithSampling):
    source: str  # the column to rewrite (a structured field as question.text)
    operators: list[Operator] = Field(default_factory=lambda: list(OPERATORS), min_length=1)
    steps: int = Field(default=1, ge=1, le=5)
    generator: str | None = None

    def reads(self) -> list[str]:
        return [self.source.split(".", 1)[0]]

    def produces(self) -> dict[str, dict[str, Any]]:
        return {self.name: {"type": "string"}, f"{self.name}__operators": {"type": "string"}}

    def generators(self) -> list[str]:
        return [self.generator] if self.generator else []


@register("evolve", EvolveParams)
def fill_evolve(params: EvolveParams, rows: list[Row], ctx: ColumnContext) -> list[Row]:
    sampling = sampling_for_dict(params.sampling, ctx)
    current: dict[int, str] = {}
    applied: dict[int, list[str]] = {}
    for i, row in enumerate(rows):
        value = row.values.get(params.source)
        if value is None:
            row.error = f"column {params.name}: its source {params.source!r} has no value"
            continue
        current[i], applied[i] = str(value), []
    for step in range(params.steps):
        live = [i for i in current if rows[i].error is None]
        reqs = []
        for i in live:
            rng = np.random.default_rng(
                draw_seed(ctx.seed, ctx.round_index, rows[i], f"{params.name}:{step}")
            )
            op = params.operators[int(rng.integers(len(params.operators)))]
            applied[i].append(op)
            msgs = (("user", TEMPLATE.format(operator=OPERATORS[op], text=current[i])),)
            seed = column_seed(ctx.seed, ctx.round_index, rows[i], f"{params.name}:{step}")
            reqs.append(request(msgs, sampling, seed, column=params.name))
        for i, req, res in zip(live, reqs, ask(ctx, params.generator, reqs), strict=True):
            row = rows[i]
            row.tokens[0] += res.prompt_tokens
            row.tokens[1] += res.completion_tokens
            row.provenance[params.name] = {"model": res.model, "prompt_hash": prompt_hash(req.messages)}
            if res.error:
                row.error = f"column {params.name}: step {step + 1}: generation failed: {res.error}"
                continue
            text = answer_text(res.text)
            if not text:
                row.error = f"column {params.name}: step {step + 1} ({applied[i][-1]}) gave an empty rewrite"
                continue
            current[i] = text
            row.raw[params.name] = res.text
    for i, text in current.items():
        if rows[i].error is None:
            rows[i].values[params.name] = text
            rows[i].values[f"{params.name}__operators"] = ",".join(applied[i])
    return rows
