"""Candidate tables: what was asked and what came back, then the generated JSON parsed into columns."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

from synthflow.generators.base import GenerationRequest, GenerationResult
from synthflow.spec import PipelineSpec
from synthflow.text import load_generated_json, split_reasoning, text_hash


def candidates_frame(
    requests: Sequence[GenerationRequest], results: Sequence[GenerationResult], *, round_index: int
) -> pd.DataFrame:
    rows = []
    for req, res in zip(requests, results, strict=True):
        rows.append(
            {
                "candidate_id": res.key,
                "round": round_index,
                "candidate_index": req.meta["candidate_index"],
                "target_cluster": req.meta.get("target_cluster", -1),
                "exemplar_ids": json.dumps(req.meta.get("exemplar_ids", [])),
                "prompt_hash": req.meta["prompt_hash"],
                "messages": json.dumps([list(m) for m in req.messages], ensure_ascii=False),
                "sampling": json.dumps(req.sampling.as_dict(), sort_keys=True),
                "seed": req.seed,
                "sample_index": req.sample_index,
                "model": res.model,
                "raw_text": res.text,
                "finish_reason": res.finish_reason,
                "error": res.error,
                "prompt_tokens": res.prompt_tokens,
                "completion_tokens": res.completion_tokens,
            }
        )
    frame = pd.DataFrame(rows)
    if rows:
        # pandas would store a missing error as NaN (truthy) as soon as one row has one; keep None per row.
        frame["error"] = pd.Series([res.error or None for res in results], dtype=object)
    return frame


def parse_outputs(candidates: pd.DataFrame, spec: PipelineSpec) -> pd.DataFrame:
    """Add the output fields as columns, `_output` (the parsed object), `_text` and `parse_error`.

    Output that is not JSON, or not a JSON object, is a parse error on that row, never an exception: the row is
    rejected with the reason and its raw text stays for audit.
    """
    out = candidates.copy()
    fields = spec.output_columns
    parsed: list[dict | None] = []
    errors: list[str | None] = []
    for raw, err, finish in zip(out["raw_text"], out["error"], out["finish_reason"], strict=True):
        if isinstance(err, str) and err:  # a stored table may hold NaN for "no error"
            parsed.append(None)
            errors.append(f"generation failed: {err}")
            continue
        try:
            # A reasoning model's <think> block is not the answer.
            obj = load_generated_json(split_reasoning(raw)[1])
        except (json.JSONDecodeError, TypeError) as e:
            parsed.append(None)
            cut = " (generation stopped at max_tokens)" if finish == "length" else ""
            errors.append(f"output is not valid JSON{cut}: {_json_problem(e)}")
            continue
        if not isinstance(obj, dict):
            parsed.append(None)
            errors.append(f"output is JSON {type(obj).__name__}, not an object")
            continue
        parsed.append(obj)
        errors.append(None)
    out["_output"] = parsed
    props = spec.generate.output_schema["properties"]
    for f in fields:
        values = []
        for i, o in enumerate(parsed):
            raw = None if o is None else o.get(f)
            v = _column_value(raw, props[f])
            if v is None and isinstance(raw, int | float) and not isinstance(raw, bool) and errors[i] is None:
                errors[i] = f"{f}: the number {_short(raw)} does not fit a {props[f].get('type')} column"
            values.append(v)
        out[f] = values
    out["parse_error"] = errors
    text_cols = spec.seed.text_columns
    out["_text"] = [
        "" if o is None else "\n".join("" if o.get(c) is None else str(o.get(c)) for c in text_cols)
        for o in parsed
    ]
    out["_text_hash"] = [text_hash(t) for t in out["_text"]]
    return out


def _json_problem(e: json.JSONDecodeError | TypeError) -> str:
    if isinstance(e, json.JSONDecodeError):
        return f"{e.msg.removesuffix(' at')} at char {e.pos}"
    return str(e)


_INT64 = 2**63 - 1


def _short(n: int | float) -> str:
    s = str(n)
    return s if len(s) <= 24 else f"{s[:12]}... ({len(s)} digits)"


def _column_value(value: Any, schema: dict[str, Any]) -> Any:
    """A generated value in the column type its schema declares, so every row of a column has one Arrow type.

    A value that does not fit (a string where a number is declared, an integer past int64) becomes None here; the
    verifiers judge the original value in `_output`, and `raw_text` keeps it for audit.
    """
    if value is None:
        return None
    kind = schema.get("type")
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        try:
            f = float(value)
        except OverflowError:
            return None
        return f if math.isfinite(f) else None
    if kind == "integer":
        return (
            value if isinstance(value, int) and not isinstance(value, bool) and abs(value) <= _INT64 else None
        )
    if kind == "boolean":
        return value if isinstance(value, bool) else None
    if kind == "string":
        return value if isinstance(value, str) else None
    return json.dumps(value, ensure_ascii=False, sort_keys=True)
