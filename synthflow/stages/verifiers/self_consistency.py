"""The `self_consistency` verifier: solve each problem k more times and keep the row when enough samples agree.

A generated problem whose stated answer a model reproduces independently is far more likely to be right than one
it cannot reproduce (self-consistency, Wang et al. 2023). Answers are compared as math where they parse (3/4 ==
0.75 == 75%), else as normalized text, see synthflow.stages.answers.
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
from pydantic import Field

from synthflow.generators.base import GenerationRequest, SamplingParams
from synthflow.stages.answers import answers_agree
from synthflow.stages.verifiers.base import Needs, VerifyContext, verdicts
from synthflow.stages.verifiers.llm_judge import (
    ask,
    chat,
    derive_seed,
    generator_for,
    parse_json_object,
    row_contexts,
)
from synthflow.stages.verifiers.registry import VerifierParams, register
from synthflow.stages.verifiers.rules import column_values
from synthflow.templates import TemplateStr

DEFAULT_PROMPT = """Solve this problem. Work it out briefly, then state only the final answer.

{{ problem }}

Reply with JSON only: {"reasoning": "...", "answer": "<final answer only>"}"""


class SelfConsistencyParams(VerifierParams):
    generator: str = "generator"  # generator name in the resource profile
    prompt: TemplateStr = DEFAULT_PROMPT  # Jinja2 (sandboxed); sees the row's fields, `problem`, `output` and `row`
    system: TemplateStr | None = None
    problem_column: str = "question"  # shown to the default prompt as `problem`
    answer_column: str = "answer"  # the candidate's own answer, which the samples must reproduce
    k: int = Field(default=5, ge=1, le=64)
    threshold: float = Field(default=0.5, gt=0, le=1)  # accept when agreeing samples / k >= threshold
    reasoning: bool = True  # ask for a reasoning field before the answer (better answers from real models)
    temperature: float = Field(default=0.7, ge=0)
    top_p: float = Field(default=0.95, gt=0, le=1)
    max_tokens: int = Field(default=512, ge=8)
    seed: int = 0
    rel_tol: float = Field(default=1e-6, ge=0)

    def requires(self) -> Needs:
        return Needs(generators=(self.generator,))



def answer_schema(reasoning: bool) -> dict[str, Any]:
    props: dict[str, Any] = {"reasoning": {"type": "string", "maxLength": 2000}} if reasoning else {}
    props["answer"] = {"type": "string", "maxLength": 200}
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


@register("self_consistency", SelfConsistencyParams)
def self_consistency_verifier(name: str, params: SelfConsistencyParams):
    sampling = SamplingParams(
        temperature=params.temperature, top_p=params.top_p, max_tokens=params.max_tokens
    )
    schema = answer_schema(params.reasoning)

    def verify(rows: pd.DataFrame, ctx: VerifyContext) -> pd.DataFrame:
        gen = generator_for(ctx, params.generator, name)
        claimed = [None if _missing(v) else v for v in column_values(rows, params.answer_column, name)]
        problems = list(column_values(rows, params.problem_column, name)) if _uses_problem(params) else None
        ids = list(rows["candidate_id"]) if "candidate_id" in rows else list(range(len(rows)))
        requests = []
        for pos, context in enumerate(row_contexts(rows)):
            if problems is not None:
                context = {**context, "problem": problems[pos]}
            messages = chat(params.system, params.prompt, context, name)
            for i in range(params.k):
                seed = derive_seed(params.seed, ids[pos], i)
                requests.append(GenerationRequest(messages, sampling, seed, i, schema, meta={"row": pos}))
        results = ask(gen, requests)
        oks, scores, reasons, samples_col, majority_col = [], [], [], [], []
        for pos in range(len(rows)):
            samples = [_sample_answer(r.text) if not r.error else None for r in results[pos]]
            agree = sum(
                1 for s in samples if s is not None and answers_agree(s, claimed[pos], params.rel_tol)
            )
            share = agree / params.k
            top, top_n = _majority(samples, params.rel_tol)
            ok = claimed[pos] is not None and share >= params.threshold
            oks.append(ok)
            scores.append(share)
            samples_col.append(json.dumps(samples, ensure_ascii=False))
            majority_col.append(top)
            if ok:
                reasons.append(None)
            elif claimed[pos] is None:
                reasons.append(f"{params.answer_column} is missing")
            else:
                most = (
                    f"most common sample answer: {top} ({top_n}/{params.k})"
                    if top is not None
                    else "no sample gave a readable answer"
                )
                reasons.append(
                    f"{agree}/{params.k} samples agree with {params.answer_column} {_show(claimed[pos])} "
                    f"(need {params.threshold:.0%}); {most}"
                )
        out = verdicts(rows.index, oks, reasons, score=scores)
        out["samples"] = pd.Series(samples_col, index=rows.index, dtype=object)
        out["majority"] = pd.Series(majority_col, index=rows.index, dtype=object)
        return out

    verify.name = name
    return verify


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and v != v) or v is pd.NA


def _show(v: Any) -> str:
    return format(v, ".15g") if isinstance(v, float) else str(v)


def _uses_problem(params: SelfConsistencyParams) -> bool:
    return "problem" in params.prompt or (params.system is not None and "problem" in params.system)


def _sample_answer(text: str) -> str | None:
    obj = parse_json_object(text)
    if obj is None or "answer" not in obj or obj["answer"] is None:
        return None
    value = obj["answer"]
    text = value if isinstance(value, str) else json.dumps(value)
    return text.strip() or None  # an empty answer is no answer


def _majority(samples: list[str | None], rel_tol: float) -> tuple[str | None, int]:
    """The most common answer among samples, grouping equivalent ones (k is small, so pairwise is fine)."""
    groups: list[tuple[str, int]] = []
    for s in samples:
        if s is None:
            continue
        for i, (rep, n) in enumerate(groups):
            if answers_agree(rep, s, rel_tol):
                groups[i] = (rep, n + 1)
                break
        else:
            groups.append((s, 1))
    if not groups:
        return None, 0
    return max(groups, key=lambda g: g[1])
