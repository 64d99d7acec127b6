"""The training-set checks of a set stored as round r-1's version plus appended rows, without reading r-1's rows.

What each check reads instead of the whole set:

- `schema`: the appended rows, given every column r-1's set has (its record's `columns`), exactly as a full
  check sees them after the concatenation: a provenance column the new rows lack is missing in them. r-1's own
  rows passed this blocking check when r-1 was stored (no round reads a version that failed it).
- `keeps_previous_rows`: the set is r-1's Delta version with rows appended (the policy marked how many rows it
  kept, which must be all of r-1's record's rows); a policy that drops rows never takes this path.
- `real_fraction`: the rows by source from r-1's record plus the new rows.
- `unique_ids`: the new ids among themselves; the round already refused new ids that repeat a real row's
  (accumulate), and earlier synthetic ids cannot recur: a row's id is its request's key, which includes the round.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import pandas as pd

from synthflow.registry import policies
from synthflow.spec import PipelineSpec
from synthflow.stages.accumulate import APPENDED_TO, schema_problems
from synthflow.stages.previous import COLUMNS, PreviousSet, add_counts, counts_of


def appended_checks(
    spec: PipelineSpec, base: PreviousSet, added: pd.DataFrame, only: Collection[str] | None = None
) -> list[tuple[str, bool, dict[str, Any]]]:
    """(name, passed, metadata) of each training-set check of `base` followed by `added`."""

    def wanted(name: str) -> bool:
        return only is None or name in only

    where = f"round r-1's version {base.record.version} ({base.rows} rows, from its record) + {len(added)} new rows"
    out = []
    if wanted("schema"):
        columns = list(dict.fromkeys([*added.columns, *base.meta.get(COLUMNS, [])]))
        problems = schema_problems(added.reindex(columns=columns), spec)
        out.append(("schema", not problems, {"problems": "; ".join(problems[:20]) or "none", "checked": where}))
    if wanted("keeps_previous_rows"):
        if policies.get(spec.accumulate.policy).keeps_previous_rows:
            kept = int(added.attrs.get(APPENDED_TO, -1))
            lost = max(0, base.rows - kept) if kept >= 0 else base.rows
            out.append(("keeps_previous_rows", lost == 0, {"lost_rows": lost, "checked": where}))
        else:
            note = "first round, or a policy that does not promise to keep every row of r-1"
            out.append(("keeps_previous_rows", True, {"note": note}))
    counts = add_counts(base.counts() or {}, counts_of(added))
    total = sum(counts.values())
    if wanted("real_fraction"):
        real = sum(n for (src, _), n in counts.items() if src == "real")
        frac = real / total if total else 0.0
        out.append(
            (
                "real_fraction",
                frac >= spec.accumulate.min_real_fraction,
                {"real_fraction": round(frac, 4), "min_real_fraction": spec.accumulate.min_real_fraction},
            )
        )
    if wanted("unique_ids"):
        dup = int(added["_id"].duplicated().sum())
        out.append(("unique_ids", dup == 0, {"duplicate_ids": dup, "checked": "the new rows' ids"}))
    return out
