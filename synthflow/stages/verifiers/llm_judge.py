"""The `llm_judge` verifier: a rubric prompt over each row, scored 1-10 by a judge model through structured output.

The judge is any generator of the resource profile (`judge:` names it), so it can be a stronger or simply a
different model than the one that wrote the rows: a model grading its own output is biased towards it.
The judge's rationale is kept for every row (column `rationale`) and quoted in the reason of rejected ones.

Also home of the small helpers both LLM-calling verifiers share (row context for templates, seeds, one batched
generate call, lenient JSON extraction).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
from pydantic import Field

from synthflow.generators.base import GenerationRequest, GenerationResult, SamplingParams
from synthflow.stages.verifiers.base import Needs, VerifyContext, verdicts
from synthflow.stages.verifiers.registry import VerifierParams, register
from synthflow.templates import TemplateError, TemplateStr, render
from synthflow.text import load_generated_json

JUDGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "rationale": {"type": "string", "maxLength": 600},
        "score": {"type": "number", "minimum": 1, "maximum": 10},
    },
    "required": ["rationale", "score"],
    "additionalProperties": False,
}

DEFAULT_SYSTEM = "You are a strict, fair reviewer of training data for language models."
DEFAULT_RUBRIC = """Review this generated training example.
{% for key, value in output.items() %}
{{ key }}: {{ value }}
{% endfor %}
Rate it from 1 (unusable) to 10 (excellent). A high score needs all of: correct, self-contained, clear, and useful
for teaching. First give a one or two sentence rationale, then the score.
Reply with JSON only: {"rationale": "...", "score": <1-10>}"""

UNPARSEABLE = "judge output unparseable"


class LLMJudgeParams(VerifierParams):
    judge: str = "judge"  # generator name in the resource profile
    rubric: TemplateStr = DEFAULT_RUBRIC  # Jinja2 (sandboxed); sees the row's fields, `output` and `row`
    system: TemplateStr | None = DEFAULT_SYSTEM
    threshold: float = Field(default=7.0, ge=1, le=10)  # accept when score >= threshold
    temperature: float = Field(default=0.0, ge=0)
    max_tokens: int = Field(default=256, ge=16)
    seed: int = 0

    def requires(self) -> Needs:
        return Needs(generators=(self.judge,))



@register("llm_judge", LLMJudgeParams)
def llm_judge_verifier(name: str, params: LLMJudgeParams):
    sampling = SamplingParams(temperature=params.temperature, top_p=1.0, max_tokens=params.max_tokens)

    def verify(rows: pd.DataFrame, ctx: VerifyContext) -> pd.DataFrame:
        judge = generator_for(ctx, params.judge, name)
        requests = []
        for pos, row in enumerate(row_contexts(rows)):
            messages = chat(params.system, params.rubric, row, name)
            seed = derive_seed(params.seed, rows["candidate_id"].iloc[pos] if "candidate_id" in rows else pos)
            requests.append(GenerationRequest(messages, sampling, seed, 0, JUDGE_SCHEMA, meta={"row": pos}))
        results = ask(judge, requests)
        scores, reasons, rationales, oks = [], [], [], []
        for pos in range(len(rows)):
            score, rationale, problem = _read_judgement(results[pos][0])
            ok = problem is None and score >= params.threshold
            if problem is None and not ok:
                problem = f"judge score {score:g} < {params.threshold:g}" + (
                    f": {rationale}" if rationale else ""
                )
            oks.append(ok)
            scores.append(score)
            reasons.append(problem)
            rationales.append(rationale)
        out = verdicts(rows.index, oks, reasons, score=scores)
        out["rationale"] = pd.Series(rationales, index=rows.index, dtype=object)
        return out

    verify.name = name
    return verify


def _read_judgement(result: GenerationResult) -> tuple[float, str | None, str | None]:
    """(score, rationale, why rejected regardless of the score). Score is NaN when there is none."""
    if result.error:
        return float("nan"), None, f"judge request failed: {result.error}"
    obj = parse_json_object(result.text)
    raw_score = obj.get("score") if obj else None
    if isinstance(raw_score, str):
        try:
            raw_score = float(raw_score.strip())
        except ValueError:
            raw_score = None
    if not isinstance(raw_score, int | float) or isinstance(raw_score, bool) or raw_score != raw_score:
        # Keep what the judge said: the audit trail shows why it could not be read.
        return float("nan"), (result.text or "")[:300], UNPARSEABLE
    rationale = obj.get("rationale")
    rationale = rationale.strip() if isinstance(rationale, str) else ""
    score = float(raw_score)
    if not 1 <= score <= 10:
        return score, rationale, f"judge score {score:g} is outside 1-10"
    return score, rationale, None


# ---- shared by the verifiers that call a generator ------------------------------------------------------------


def generator_for(ctx: VerifyContext, key: str, verifier: str) -> Any:
    gen = ctx.generators.get(key)
    if gen is None:
        have = ", ".join(sorted(ctx.generators)) or "none"
        raise ValueError(
            f"verifier {verifier!r} needs a generator named {key!r} in the resource profile (have: {have})"
        )
    return gen


def row_contexts(rows: pd.DataFrame) -> list[dict[str, Any]]:
    """Template context per row: every non-internal column by name, `output` (the generated object) and `row`."""
    public = [c for c in rows.columns if not str(c).startswith("_")]
    out = []
    for rec, output in zip(
        rows[public].to_dict(orient="records"),
        rows["_output"] if "_output" in rows else [None] * len(rows),
        strict=True,
    ):
        rec = {k: (None if _is_missing(v) else v) for k, v in rec.items()}
        obj = output if isinstance(output, dict) else {k: rec.get(k) for k in public}
        out.append({**rec, "output": obj, "row": rec})
    return out


def chat(
    system: str | None, prompt: str, context: Mapping[str, Any], verifier: str
) -> tuple[tuple[str, str], ...]:
    try:
        user = render(prompt, **context)
        messages = [("user", user)]
        if system:
            messages.insert(0, ("system", render(system, **context)))
    except TemplateError as e:
        raise ValueError(f"verifier {verifier!r}: {e}") from e
    return tuple(messages)


def derive_seed(base: int, *parts: object) -> int:
    """A stable seed per (base, candidate, sample): reruns hit the generation cache, samples differ."""
    blob = json.dumps([base, *[str(p) for p in parts]]).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:4], "big") & 0x7FFFFFFF


def ask(generator: Any, requests: Sequence[GenerationRequest]) -> dict[int, list[GenerationResult]]:
    """One batched generate call; results grouped by meta["row"] and ordered by sample_index."""
    # By content key as well as meta, so a wrapper (a cache, say) that rebuilds requests still maps back.
    position = {req.key(""): req.meta["row"] for req in requests}
    grouped: dict[int, list[tuple[int, GenerationResult]]] = {}
    for req, res in generator.generate(list(requests)):
        row = req.meta["row"] if "row" in req.meta else position[req.key("")]
        grouped.setdefault(row, []).append((req.sample_index, res))
    missing = {r.meta["row"] for r in requests} - set(grouped)
    if missing:
        raise RuntimeError(
            f"generator {getattr(generator, 'label', generator)!r} returned no result for some rows"
        )
    return {row: [r for _, r in sorted(items, key=lambda t: t[0])] for row, items in grouped.items()}


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S)


def parse_json_object(text: str | None) -> dict[str, Any] | None:
    """The JSON object in a reply: the whole text, a fenced block, or the first balanced {...}."""
    if not text:
        return None
    candidates = [text.strip(), *(m.group(1) for m in _FENCE.finditer(text))]
    start = text.find("{")
    if start >= 0:
        end = _balanced_end(text, start)
        if end:
            candidates.append(text[start:end])
    for c in candidates:
        try:
            obj = load_generated_json(c)
        except (json.JSONDecodeError, ValueError):
            continue
        if isinstance(obj, dict):
            return obj
    return None


def _balanced_end(text: str, start: int) -> int | None:
    depth, in_str, escaped = 0, False, False
    for i in range(start, len(text)):
        ch = text[i]
        if in_str:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i + 1
    return None


def _is_missing(v: Any) -> bool:
    try:
        return v is None or bool(pd.isna(v))
    except (TypeError, ValueError):
        return False  # lists and dicts: present
