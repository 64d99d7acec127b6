"""What the verifier tests share: a small spec, candidate rows shaped as a round hands them over, and a runner."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from synthflow.spec import VerifierSpec, parse_spec
from synthflow.stages.verifiers.base import VerifyContext
from synthflow.stages.verifiers.registry import build

MATH_SPEC = """
name: t
seed:
  source: seed.jsonl
  text: question
  columns: [{name: question}, {name: solution}, {name: answer, type: float}]
generate:
  prompt: "Write a problem."
  output_schema:
    type: object
    properties: {question: {type: string}, solution: {type: string}, answer: {type: number}}
"""


def candidate_rows(records: list[dict], text_column: str = "question") -> pd.DataFrame:
    df = pd.DataFrame(records)
    df["candidate_id"] = [f"c{i}" for i in range(len(df))]
    df["_output"] = records
    df["_text"] = df[text_column]
    return df.set_axis(range(100, 100 + len(df)))  # an index that is not 0..n-1, as in a real batch


def context(
    spec_text: str = MATH_SPEC, path: str = "<string>", generators: Mapping[str, Any] | None = None
) -> VerifyContext:
    return VerifyContext(
        spec=parse_spec(spec_text, path), reference=pd.DataFrame(), accepted=pd.DataFrame(),
        generators=dict(generators or {}),
    )


def run_verifier(vtype: str, params: dict, rows: pd.DataFrame, ctx: VerifyContext) -> pd.DataFrame:
    """Build the verifier from its spec entry, run it, and check it answered for exactly the rows it was given."""
    out = build(VerifierSpec(type=vtype, **params))(rows, ctx)
    assert out.index.equals(rows.index)
    return out
