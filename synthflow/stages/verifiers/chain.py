"""Running the ordered verify chain over a batch of parsed candidates.

Each verifier sees only the rows every earlier verifier accepted (an LLM judge never pays for a row the schema
already threw out). Its verdicts become `<name>_ok`, `<name>_score`, `<name>_reason` and any extra columns it
returns as `<name>_<column>`; rows it did not see keep NA there. The first failing verifier and its reason go to
`rejected_by` / `reject_reason`.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from synthflow.stages.verifiers.base import VERDICT_COLUMNS, Verifier, VerifyContext
from synthflow.stages.verifiers.rewrite import apply_rewrites


def run_chain(rows: pd.DataFrame, verifiers: Sequence[Verifier], ctx: VerifyContext) -> pd.DataFrame:
    out = rows.copy()
    out["accepted"] = out["parse_error"].isna()
    out["rejected_by"] = pd.Series(
        [None if ok else "parse" for ok in out["accepted"]], index=out.index, dtype=object
    )
    out["reject_reason"] = out["parse_error"].astype(object)
    for verifier in verifiers:
        live = out.index[out["accepted"]]
        name = verifier.name
        if len(live) == 0:
            for c in VERDICT_COLUMNS:
                out[f"{name}_{c}"] = None
            continue
        verdict = verifier(out.loc[live], ctx)
        if not verdict.index.equals(live):
            raise ValueError(f"verifier {name!r} returned verdicts for other rows than it was given")
        verdict = apply_rewrites(out, verdict, ctx.spec)  # a redacting verifier's new field values
        for c in verdict.columns:
            out[f"{name}_{c}"] = verdict[c].reindex(out.index)
        failed = verdict.index[~verdict["ok"].astype(bool)]
        out.loc[failed, "accepted"] = False
        out.loc[failed, "rejected_by"] = name
        out.loc[failed, "reject_reason"] = verdict.loc[failed, "reason"].fillna(f"rejected by {name}")
    return out
