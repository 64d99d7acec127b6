"""The `pii` verifier: personal data in generated rows is rejected or redacted.

Detection is Presidio's (see pii_engine; imported only when this verifier runs). `action: reject` rejects a row
with any PII, naming the types and fields but never the values (the reason is stored). `action: redact` keeps
the row and replaces each span in its fields with a placeholder (`<EMAIL>`, `<PERSON>`, ...) through the chain's
rewrite columns, so verifiers after pii, the verified table and the training set see the redacted text.

Counts per type for the round go to `ctx.state["verifier_stats"][name]`, which the round reports in its
coverage (`verifier_stats`).
"""

from __future__ import annotations

import json
from typing import Literal

import pandas as pd
from pydantic import Field

from synthflow.stages.verifiers.base import VerifyContext, verdicts
from synthflow.stages.verifiers.pii_engine import DEFAULT_PHONE_REGIONS, ENTITIES, finder, redact
from synthflow.stages.verifiers.registry import VerifierParams, register
from synthflow.stages.verifiers.rewrite import rewrite_column

PiiType = Literal["email", "phone", "credit_card", "ip_address", "iban", "person", "location"]


class PiiParams(VerifierParams):
    types: list[PiiType] = Field(default_factory=lambda: list(ENTITIES), min_length=1)
    action: Literal["reject", "redact"] = "reject"
    columns: list[str] | None = None  # fields checked (and redacted); default: every string output field
    placeholder: str = "<{type}>"  # {type}: EMAIL, PHONE, CREDIT_CARD, IP_ADDRESS, IBAN, PERSON, LOCATION
    phone_regions: list[str] = Field(default_factory=lambda: list(DEFAULT_PHONE_REGIONS), min_length=1)
    min_score: float = Field(default=0.0, ge=0, le=1)  # Presidio's confidence below which a span is ignored


@register("pii", PiiParams)
def pii_verifier(name: str, params: PiiParams):
    def verify(rows: pd.DataFrame, ctx: VerifyContext) -> pd.DataFrame:
        stats = ctx.state.setdefault("verifier_stats", {}).setdefault(
            name,
            {
                "action": params.action,
                "rows_checked": 0,
                "rows_with_pii": 0,
                "pii_found": dict.fromkeys(params.types, 0),
            },
        )
        fields = _fields(rows, ctx, params, name)
        find = finder(tuple(params.types), tuple(params.phone_regions), params.min_score)
        per_row: list[dict[str, int]] = [{} for _ in range(len(rows))]
        where: list[list[str]] = [[] for _ in range(len(rows))]
        rewritten: dict[str, list[str | None]] = {}
        for field in fields:
            values = rows[field].tolist()
            pos = [i for i, v in enumerate(values) if isinstance(v, str) and v]
            spans = find.find([values[i] for i in pos])
            new: list[str | None] = [None] * len(rows)
            for i, found in zip(pos, spans, strict=True):
                if not found:
                    continue
                for s in found:
                    per_row[i][s.type] = per_row[i].get(s.type, 0) + 1
                    stats["pii_found"][s.type] += 1
                kinds = sorted({s.type for s in found})
                where[i].append(f"{'/'.join(kinds)} in {field}")
                new[i] = redact(values[i], found, params.placeholder)
            if any(v is not None for v in new):
                rewritten[field] = new
        stats["rows_checked"] += len(rows)
        stats["rows_with_pii"] += sum(1 for c in per_row if c)
        total = [sum(c.values()) for c in per_row]
        if params.action == "reject":
            reasons = [f"contains PII: {', '.join(w)}" if w else None for w in where]
            out = verdicts(rows.index, [r is None for r in reasons], reasons, score=total)
        else:
            out = verdicts(rows.index, True, None, score=total)
            for field, new in rewritten.items():
                out[rewrite_column(field)] = pd.Series(new, index=rows.index, dtype=object)
        out["found"] = pd.Series(
            [json.dumps(c, sort_keys=True) if c else None for c in per_row], index=rows.index, dtype=object
        )
        return out

    verify.name = name
    return verify


def _fields(rows: pd.DataFrame, ctx: VerifyContext, params: PiiParams, name: str) -> list[str]:
    if params.columns:
        missing = [c for c in params.columns if c not in rows.columns]
        if missing:
            raise ValueError(f"verifier {name!r} (pii): columns {missing} are not in the generated rows")
        return list(params.columns)
    props = ctx.spec.generate.output_schema.get("properties", {})
    return [c for c in ctx.spec.output_columns if props.get(c, {}).get("type") == "string" and c in rows.columns]
