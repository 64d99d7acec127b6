"""Per-round coverage numbers. The embedding-space metrics (clusters, Vendi, KL) come from stages.diversity."""

from __future__ import annotations

import pandas as pd


def round_counts(verified: pd.DataFrame) -> dict[str, object]:
    n = len(verified)
    accepted = int(verified["accepted"].sum()) if n else 0
    by = verified.loc[~verified["accepted"], "rejected_by"].value_counts().to_dict() if n else {}
    exact_dups = int(verified["reject_reason"].fillna("").str.startswith("exact duplicate").sum()) if n else 0
    return {
        "candidates": n,
        "accepted": accepted,
        "rejected": n - accepted,
        "acceptance_rate": round(accepted / n, 4) if n else 0.0,
        "rejected_by": {str(k): int(v) for k, v in sorted(by.items())},
        "exact_duplicate_rate": round(exact_dups / n, 4) if n else 0.0,
        "parse_failure_rate": round(int(verified["parse_error"].notna().sum()) / n, 4) if n else 0.0,
    }
