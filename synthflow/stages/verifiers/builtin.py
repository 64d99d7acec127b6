"""Built-in verifiers that need nothing but the candidates: output schema, length bounds, exact duplicates.

The richer verifiers (rules, semantic dedup, LLM judge, self-consistency, math answers, code tests, user functions)
register themselves from their own modules; add a module to registry._BUILTIN_MODULES to ship one.
"""

from __future__ import annotations

from typing import Literal

import jsonschema
import pandas as pd
from pydantic import Field

from synthflow.stages.schema import column_failures
from synthflow.stages.text_index import text_hashes
from synthflow.stages.verifiers.base import VerifyContext, verdicts
from synthflow.stages.verifiers.registry import VerifierParams, register
from synthflow.text import normalize_text

# VerifyContext.state key: a TextIndex of the texts accepted in earlier rounds (see exact_dedup).
ACCEPTED_TEXT_INDEX = "accepted_text_index"


class SchemaParams(VerifierParams):
    columns: bool = True  # also apply the seed's column constraints (pandera) to the generated fields


@register("schema", SchemaParams)
def schema_verifier(name: str, params: SchemaParams):
    def verify(rows: pd.DataFrame, ctx: VerifyContext) -> pd.DataFrame:
        validator = jsonschema.Draft202012Validator(ctx.spec.generate.output_schema)
        reasons: list[str | None] = []
        for obj in rows["_output"]:
            err = next(iter(sorted(validator.iter_errors(obj), key=lambda e: list(e.path))), None)
            if err is None:
                reasons.append(None)
            else:
                where = "/".join(str(p) for p in err.path) or "<row>"
                reasons.append(f"output schema: {where}: {err.message}")
        out = pd.Series(reasons, index=rows.index, dtype=object)
        if params.columns:
            declared = [c for c in ctx.spec.seed.columns if c.name in ctx.spec.output_columns]
            ok_rows = rows[out.isna()]
            for pos, column, check in column_failures(ok_rows, declared):
                idx = ok_rows.index[pos]
                if out[idx] is None:
                    out[idx] = f"column {column}: {check}"
        return verdicts(rows.index, out.isna(), out)

    verify.name = name
    return verify


class LengthParams(VerifierParams):
    column: str | None = None  # defaults to the text used for dedup
    min_chars: int = Field(default=1, ge=0)
    max_chars: int | None = Field(default=None, ge=1)


@register("length", LengthParams)
def length_verifier(name: str, params: LengthParams):
    def verify(rows: pd.DataFrame, ctx: VerifyContext) -> pd.DataFrame:
        col = params.column or "_text"
        if col not in rows.columns:
            raise ValueError(f"verifier {name!r}: column {col!r} is not in the generated rows")
        lengths = rows[col].fillna("").astype(str).str.len()
        too_short = lengths < params.min_chars
        too_long = lengths > params.max_chars if params.max_chars else pd.Series(False, index=rows.index)
        reason = pd.Series(None, index=rows.index, dtype=object)
        reason[too_short] = [
            f"{col} has {n} characters, fewer than {params.min_chars}" for n in lengths[too_short]
        ]
        reason[too_long] = [
            f"{col} has {n} characters, more than {params.max_chars}" for n in lengths[too_long]
        ]
        return verdicts(rows.index, ~(too_short | too_long), reason, score=lengths)

    verify.name = name
    return verify


class ExactDedupParams(VerifierParams):
    against: list[Literal["batch", "accepted", "reference"]] = ["batch", "accepted", "reference"]


@register("exact_dedup", ExactDedupParams)
def exact_dedup_verifier(name: str, params: ExactDedupParams):
    """Rejects a candidate whose normalized text equals an earlier candidate, an accepted row, or a seed/real row."""

    def verify(rows: pd.DataFrame, ctx: VerifyContext) -> pd.DataFrame:
        seen: dict[str, str] = {}
        # Earlier rounds' accepted texts as a persistent hash set (synthflow.stages.text_index), when the round
        # gives one: then ctx.accepted holds only this round's rows and earlier rows are never loaded.
        index = ctx.state.get(ACCEPTED_TEXT_INDEX) if "accepted" in params.against else None
        earlier = index.contains(text_hashes(rows["_text"])) if index is not None and len(rows) else None
        if "reference" in params.against:
            seen.update(
                {
                    normalize_text(t): f"seed/real row {i}"
                    for i, t in zip(ctx.reference["_id"], ctx.reference["_text"], strict=True)
                }
            )
        if "accepted" in params.against and len(ctx.accepted):
            seen.update(
                {
                    normalize_text(t): f"synthetic row {i}"
                    for i, t in zip(ctx.accepted["_id"], ctx.accepted["_text"], strict=True)
                }
            )
        reasons = []
        for pos, (cid, text) in enumerate(zip(rows["candidate_id"], rows["_text"], strict=True)):
            norm = normalize_text(text)
            hit = seen.get(norm)
            if hit is None and earlier is not None and earlier[pos]:
                hit = "a row accepted in an earlier round"
            reasons.append(f"exact duplicate of {hit}" if hit else None)
            if hit is None and "batch" in params.against:
                seen[norm] = f"candidate {cid}"
        reason = pd.Series(reasons, index=rows.index, dtype=object)
        return verdicts(rows.index, reason.isna(), reason)

    verify.name = name
    return verify
