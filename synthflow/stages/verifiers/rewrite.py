"""Verifiers that rewrite fields (pii's redaction) instead of only judging them.

A verifier returns the new value of field `f` in the verdict column `rewrite:f` (NA where the row keeps its
value). The chain writes it into the row before the next verifier runs, so later verifiers, the verified table
and the training set all see the rewritten text; `_output` and `_text` follow. `raw_text` (the generation as it
came) is left alone for audit.
"""

from __future__ import annotations

import pandas as pd

from synthflow.spec import PipelineSpec
from synthflow.text import text_hash

REWRITE_PREFIX = "rewrite:"


def rewrite_column(field: str) -> str:
    return f"{REWRITE_PREFIX}{field}"


def apply_rewrites(out: pd.DataFrame, verdict: pd.DataFrame, spec: PipelineSpec | None) -> pd.DataFrame:
    """Write the verdict's `rewrite:` columns into `out` (in place) and return the verdict without them."""
    cols = [c for c in verdict.columns if str(c).startswith(REWRITE_PREFIX)]
    if not cols:
        return verdict
    changed: set = set()
    for col in cols:
        field = col[len(REWRITE_PREFIX) :]
        values = verdict[col].dropna()
        if not len(values):
            continue
        if field not in out.columns:
            out[field] = None
        out[field] = out[field].astype(object)
        out.loc[values.index, field] = values
        if "_output" in out.columns:
            out.loc[values.index, "_output"] = pd.Series(
                [
                    {**o, field: v} if isinstance(o, dict) else o
                    for o, v in zip(out.loc[values.index, "_output"], values, strict=True)
                ],
                index=values.index,
                dtype=object,
            )
        changed.update(values.index)
    text_cols = spec.seed.text_columns if spec is not None else []
    if changed and "_text" in out.columns and text_cols and all(c in out.columns for c in text_cols):
        # The same join parse_outputs makes, so dedup and embeddings see the rewritten text.
        idx = [i for i in out.index if i in changed]
        out.loc[idx, "_text"] = [
            "\n".join("" if v is None or v != v else str(v) for v in vals)
            for vals in out.loc[idx, text_cols].itertuples(index=False, name=None)
        ]
        if "_text_hash" in out.columns:
            out.loc[idx, "_text_hash"] = [text_hash(t) for t in out.loc[idx, "_text"]]
    return verdict.drop(columns=cols)
