"""Building a round's training set from real rows, earlier rounds and this round's accepted synthetic rows.

Why accumulate by default: training on model outputs alone collapses models; keeping every real row and adding
synthetic rows across rounds bounds the error (Gerstgrasser et al., COLM 2024). `replace` exists for ablations.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from synthflow.spec import AccumulateSpec

PROVENANCE_COLUMNS = ["_id", "_source", "_round", "_model", "_prompt_hash", "_exemplar_ids", "_scores"]


class AccumulationError(ValueError):
    pass


def real_rows(real: pd.DataFrame, data_columns: list[str], round_index: int) -> pd.DataFrame:
    """Real rows with provenance. `_round` is the round they arrived in (0 for the seed / initial real data)."""
    out = real[[c for c in data_columns if c in real.columns]].copy()
    out["_id"] = real["_id"].astype(str).values
    out["_text"] = real["_text"].values
    out["_source"] = "real"
    out["_round"] = real["_round"].values if "_round" in real.columns else round_index
    out["_model"] = None
    out["_prompt_hash"] = None
    out["_exemplar_ids"] = None
    out["_scores"] = None
    return out


def synthetic_rows(
    verified: pd.DataFrame, data_columns: list[str], verifier_names: list[str]
) -> pd.DataFrame:
    acc = verified[verified["accepted"]]
    out = acc[[c for c in data_columns if c in acc.columns]].copy()
    out["_id"] = acc["candidate_id"].astype(str).values
    out["_text"] = acc["_text"].values
    out["_source"] = "synthetic"
    out["_round"] = acc["round"].astype(int).values
    out["_model"] = acc["model"].values
    out["_prompt_hash"] = acc["prompt_hash"].values
    out["_exemplar_ids"] = acc["exemplar_ids"].values
    scores = []
    for _, row in acc.iterrows():
        s = {n: _num(row.get(f"{n}_score")) for n in verifier_names}
        scores.append(json.dumps({k: v for k, v in s.items() if v is not None}, sort_keys=True))
    out["_scores"] = scores
    return out


def _num(v) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if np.isnan(f) else f


def build_training_set(
    policy: AccumulateSpec,
    *,
    real: pd.DataFrame,
    previous: pd.DataFrame | None,
    new_synthetic: pd.DataFrame,
    round_index: int,
    seed: int = 0,
) -> pd.DataFrame:
    """real: every real row known at this round (already with provenance); previous: training set of round r-1."""
    prev_synth = (
        previous[previous["_source"] == "synthetic"] if previous is not None else new_synthetic.iloc[0:0]
    )
    if policy.policy == "replace":
        synth = new_synthetic
    else:
        synth = pd.concat([prev_synth, new_synthetic], ignore_index=True)
    if policy.policy == "accumulate_subsample":
        synth = _subsample(real, synth, policy, round_index, seed)
    synth = _enforce_real_fraction(real, synth, policy, round_index, seed)
    out = pd.concat([real, synth], ignore_index=True)
    dupes = out["_id"][out["_id"].duplicated()]
    if len(dupes):
        raise AccumulationError(f"training set would hold duplicate ids: {sorted(set(dupes))[:5]}")
    return out.reset_index(drop=True)


def _rng(seed: int, round_index: int) -> np.random.Generator:
    return np.random.default_rng([seed, round_index, 7])


def _subsample(real: pd.DataFrame, synth: pd.DataFrame, policy: AccumulateSpec, round_index: int, seed: int):
    """Keep a fixed number of synthetic rows, stratified by the round they came from (Kazdan et al., 2025)."""
    budget = policy.subsample_size or len(real)
    if len(synth) <= budget:
        return synth
    rng = _rng(seed, round_index)
    groups = synth.groupby("_round", sort=True).groups
    per = {r: len(ix) for r, ix in groups.items()}
    total = sum(per.values())
    take = {r: int(np.floor(budget * n / total)) for r, n in per.items()}
    for r in sorted(per, key=lambda r: -(budget * per[r] / total - take[r]))[: budget - sum(take.values())]:
        take[r] += 1
    keep = np.concatenate(
        [rng.choice(np.asarray(groups[r]), take[r], replace=False) for r in groups if take[r]]
    )
    return synth.loc[np.sort(keep)]


def _enforce_real_fraction(real, synth, policy: AccumulateSpec, round_index: int, seed: int) -> pd.DataFrame:
    need = policy.min_real_fraction
    total = len(real) + len(synth)
    if need <= 0 or total == 0 or len(real) / total >= need:
        return synth
    allowed = int(np.floor(len(real) * (1 - need) / need)) if need < 1 else 0
    if policy.on_low_real_fraction == "fail":
        raise AccumulationError(
            f"real rows would be {len(real)}/{total} = {len(real) / total:.3f} of the training set, below "
            f"accumulate.min_real_fraction = {need}; at most {allowed} synthetic rows fit. Add real data, lower the "
            "fraction, or set accumulate.on_low_real_fraction: subsample"
        )
    keep = _rng(seed, round_index).choice(np.arange(len(synth)), allowed, replace=False)
    return synth.iloc[np.sort(keep)]
