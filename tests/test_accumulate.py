"""Accumulation policies, min_real_fraction and provenance columns of build_training_set (no Dagster)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from synthflow.spec import AccumulateSpec
from synthflow.stages.accumulate import (
    PROVENANCE_COLUMNS,
    AccumulationError,
    build_training_set,
    real_rows,
    schema_problems,
    synthetic_rows,
)

DATA = ["run", "value"]


def real(n: int, round_index: int = 0, runs: int = 1) -> pd.DataFrame:
    df = pd.DataFrame(
        {
            "run": np.arange(n) % runs,
            "value": np.arange(n, dtype=float),
            "_id": [f"real-{round_index}-{i}" for i in range(n)],
            "_text": [f"text {round_index} {i}" for i in range(n)],
            "_round": round_index,
        }
    )
    return real_rows(df, DATA, round_index)


def synthetic(n: int, round_index: int, runs: int = 1, scored: bool = True) -> pd.DataFrame:
    """Accepted rows of one round the way the round loop's verified table has them."""
    verified = pd.DataFrame(
        {
            "candidate_id": [f"c{round_index}-{i}" for i in range(n)],
            "accepted": True,
            "round": round_index,
            "run": np.arange(n) % runs,
            "value": np.full(n, 100.0 * round_index),
            "_text": [f"synthetic {round_index} {i}" for i in range(n)],
            "model": "model-a",
            "prompt_hash": "ph",
            "exemplar_ids": json.dumps(["real-0-0"]),
            "judge_score": np.linspace(0, 1, n) if scored else np.nan,
        }
    )
    return synthetic_rows(verified, DATA, ["judge"] if scored else [], model_version="v1")


def rounds(
    policy: AccumulateSpec,
    n_rounds: int,
    *,
    per_round: int = 4,
    n_real: int = 4,
    runs: int = 1,
    fresh: int = 0,
    use_pool: bool = True,
) -> list[pd.DataFrame]:
    """Training sets of rounds 1..n_rounds built one after the other, like the pipeline does."""
    out, previous, pool = [], None, None
    known_real = real(n_real, 0, runs)
    for r in range(1, n_rounds + 1):
        if fresh:
            known_real = pd.concat([known_real, real(fresh, r, runs)], ignore_index=True)
        new = synthetic(per_round, r, runs)
        ts = build_training_set(
            policy,
            real=known_real,
            previous=previous,
            new_synthetic=new,
            round_index=r,
            seed=3,
            group_by=["run"] if runs > 1 else (),
            pool=pool if use_pool else None,
        )
        pool = new if pool is None else pd.concat([pool, new], ignore_index=True)
        out.append(ts)
        previous = ts
    return out


def test_accumulate_keeps_every_row_of_the_previous_round():
    sets = rounds(AccumulateSpec(policy="accumulate"), 4)
    for prev, cur, r in zip(sets, sets[1:], range(2, 5), strict=False):
        assert set(prev["_id"]) <= set(cur["_id"])
        assert len(cur) == len(prev) + 4
        assert (cur[cur["_source"] == "synthetic"]["_round"] <= r).all()
    assert (sets[-1]["_source"] == "real").sum() == 4


def test_replace_keeps_only_this_rounds_synthetic_rows_and_fresh_real_rows():
    sets = rounds(AccumulateSpec(policy="replace"), 3, fresh=2)
    for r, ts in enumerate(sets, start=1):
        assert set(ts["_round"]) == {r}
        assert (ts["_source"] == "synthetic").sum() == 4
        assert (ts["_source"] == "real").sum() == 2, "only the real rows that arrived this round"


def test_fresh_real_rows_accumulate_under_accumulate():
    sets = rounds(AccumulateSpec(policy="accumulate"), 3, fresh=2)
    real_part = sets[-1][sets[-1]["_source"] == "real"]
    assert sorted(real_part["_round"].unique()) == [0, 1, 2, 3]
    assert len(real_part) == 4 + 3 * 2


def test_subsample_has_a_fixed_size_stratified_by_source_and_round():
    policy = AccumulateSpec(policy="accumulate_subsample", subsample_size=10)
    sets = rounds(policy, 4, per_round=10, n_real=10)
    for r, ts in enumerate(sets, start=1):
        assert len(ts) == 10
        counts = ts.groupby(["_source", "_round"]).size()
        # r+1 strata of 10 rows each share 10 rows: every stratum gets floor or ceil of 10/(r+1).
        assert len(counts) == r + 1
        assert counts.min() >= 10 // (r + 1) and counts.max() <= -(-10 // (r + 1)), counts.to_dict()


def test_subsample_draws_from_the_whole_pool_not_only_the_previous_subsample():
    policy = AccumulateSpec(policy="accumulate_subsample", subsample_size=6)
    sets = rounds(policy, 6, per_round=6, n_real=6)
    ever_kept = set().union(*(set(ts["_id"]) for ts in sets))
    round1 = {f"c1-{i}" for i in range(6)}
    later = set(sets[-1]["_id"]) | set(sets[-2]["_id"])
    # Rows of round 1 that a subsample dropped come back later: the pool keeps them.
    dropped_then_back = {i for i in round1 if i not in set(sets[1]["_id"]) and i in later}
    assert ever_kept and dropped_then_back


def test_subsample_applies_within_each_group():
    policy = AccumulateSpec(policy="accumulate_subsample", subsample_size=6)
    sets = rounds(policy, 3, per_round=18, n_real=18, runs=3)
    for ts in sets:
        sizes = ts.groupby("run").size()
        assert sizes.to_dict() == {0: 6, 1: 6, 2: 6}


def test_subsample_is_reproducible_for_a_seed():
    policy = AccumulateSpec(policy="accumulate_subsample", subsample_size=5)
    a = rounds(policy, 3, per_round=8, n_real=8)
    b = rounds(policy, 3, per_round=8, n_real=8)
    assert [list(x["_id"]) for x in a] == [list(x["_id"]) for x in b]


def test_min_real_fraction_fails_with_a_clear_message():
    policy = AccumulateSpec(policy="accumulate", min_real_fraction=0.5, on_low_real_fraction="fail")
    with pytest.raises(
        AccumulationError, match=r"real rows would be 4/9 = 0.444.*min_real_fraction = 0.5.*at most 4"
    ):
        build_training_set(policy, real=real(4), previous=None, new_synthetic=synthetic(5, 1), round_index=1)


def test_min_real_fraction_subsample_cuts_new_rows_first():
    policy = AccumulateSpec(policy="accumulate", min_real_fraction=0.5, on_low_real_fraction="subsample")
    sets = rounds(policy, 3, per_round=3, n_real=6)
    r1, r2, r3 = sets
    assert len(r1) == 9 and len(r2) == 12, "within the fraction: nothing cut"
    assert (r3["_source"] == "real").mean() >= 0.5
    assert len(r3) == 12 and set(r2["_id"]) <= set(r3["_id"]), (
        "the cut falls on round 3's rows, r-1 stays whole"
    )


def test_min_real_fraction_holds_per_group():
    policy = AccumulateSpec(policy="replace", min_real_fraction=0.25, on_low_real_fraction="subsample")
    ts = build_training_set(
        policy,
        real=real(4, 1, runs=2),
        previous=None,
        new_synthetic=synthetic(20, 1, runs=2),
        round_index=1,
        group_by=["run"],
    )
    frac = ts.groupby("run")["_source"].apply(lambda s: (s == "real").mean())
    assert (frac >= 0.25 - 1e-9).all() and len(ts) == 4 + 2 * 6


def test_min_real_fraction_in_a_subsample_reserves_real_rows():
    policy = AccumulateSpec(policy="accumulate_subsample", subsample_size=10, min_real_fraction=0.6)
    sets = rounds(policy, 3, per_round=10, n_real=10)
    for ts in sets:
        assert len(ts) == 10 and (ts["_source"] == "real").sum() >= 6


def test_duplicate_ids_are_refused():
    dup = synthetic(2, 1)
    dup["_id"] = "real-0-0"
    with pytest.raises(AccumulationError, match="duplicate ids"):
        build_training_set(AccumulateSpec(), real=real(2), previous=None, new_synthetic=dup, round_index=1)


def test_provenance_columns_are_plain_and_survive_export(tmp_path):
    ts = rounds(AccumulateSpec(), 2)[-1]
    for col in PROVENANCE_COLUMNS:
        assert col in ts.columns, col
    synth = ts[ts["_source"] == "synthetic"]
    assert set(synth["_model"]) == {"model-a"} and set(synth["_model_version"]) == {"v1"}
    assert json.loads(synth["_exemplar_ids"].iloc[0]) == ["real-0-0"]
    scores = [json.loads(s) for s in synth["_scores"]]
    assert scores[0] == {"judge": 0.0} and scores[-1] == {"judge": 1.0}
    assert ts.loc[ts["_source"] == "real", "_model"].isna().all()
    path = tmp_path / "ts.parquet"
    ts.to_parquet(path)
    back = pd.read_parquet(path)
    pd.testing.assert_frame_equal(back[PROVENANCE_COLUMNS].astype(str), ts[PROVENANCE_COLUMNS].astype(str))
    datasets = pytest.importorskip("datasets")
    hf = datasets.Dataset.from_pandas(ts, preserve_index=False)
    assert {c for c in PROVENANCE_COLUMNS} <= set(hf.column_names)
    assert hf[-1]["_scores"] == ts["_scores"].iloc[-1]


def test_unscored_rows_get_an_empty_score_object():
    rows = synthetic(3, 1, scored=False)
    assert list(rows["_scores"]) == ["{}"] * 3


def test_schema_problems_names_what_is_wrong():
    from synthflow.collapse.loop import LoopConfig, run_loop, spec_for

    cfg = LoopConfig("gaussian", "accumulate", runs=2, rows=5, generations=2)
    seen = []
    run_loop(cfg, observe=lambda r, ts: seen.append(ts))
    ts, spec = seen[-1], spec_for(cfg)
    assert schema_problems(ts, spec) == []
    broken = ts.drop(columns=["_scores"]).assign(y=ts["y"].astype(str))
    broken.loc[broken.index[-1], "_source"] = "invented"
    broken.loc[broken.index[-2], "_model"] = None
    problems = schema_problems(broken, spec)
    assert any("missing columns: ['_scores']" in p for p in problems)
    assert any("_source must be" in p for p in problems)
    assert any("1 synthetic rows without _model" in p for p in problems)
    assert any("column 'y'" in p and "number" in p for p in problems)
