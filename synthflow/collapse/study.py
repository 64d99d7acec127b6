"""The collapse_study example: 1-D Gaussians and linear regression under the three policies, side by side.

One pipeline carries every arm as columns (`experiment`, `policy`, `run`) and accumulates everything, so each
round's training set holds the whole history of every arm. Each arm's generator is fitted on the rows its own
policy keeps, computed by `build_training_set` with that policy (the function p/training_set uses), so
replace, accumulate and accumulate_subsample run in one materialization with the same real data and seeds, and
the report can redraw every arm's error at every earlier round from the pipeline's own rows.

Real rows (the seed) carry no `policy`: every arm starts from the same real data. The truth the errors are
measured against comes from the recipe that wrote the seed (`write_seed`, parameter `data_seed`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from synthflow.collapse import data, gaussian, linear, theory
from synthflow.collapse.plot import panels_png
from synthflow.spec import AccumulateSpec
from synthflow.stages.accumulate import build_training_set

POLICIES = ("replace", "accumulate", "accumulate_subsample")
EXPERIMENTS = ("gaussian", "linear")
EXPERIMENT = "experiment"
POLICY = "policy"


def write_seed(
    path: str | Path, *, runs: int, gaussian_rows: int, linear_rows: int, d: int, seed: int = 0
) -> None:
    """The study's real data: `runs` independent runs of each experiment, as JSON lines."""
    g = data.gaussian_rows(runs, gaussian_rows, seed=seed)
    lin = data.linear_rows(runs, linear_rows, d, seed=seed)
    g.insert(0, EXPERIMENT, "gaussian")
    lin.insert(0, EXPERIMENT, "linear")
    rows = pd.concat([g, lin], ignore_index=True)
    with open(path, "w") as f:
        for rec in rows.to_dict("records"):
            f.write(
                json.dumps({k: v for k, v in rec.items() if not (isinstance(v, float) and np.isnan(v))})
                + "\n"
            )


def split_arms(rows: pd.DataFrame) -> dict[tuple[str, str | None], pd.DataFrame]:
    """{(experiment, None): real rows, (experiment, policy): that arm's synthetic rows}, split once."""
    out: dict[tuple[str, str | None], pd.DataFrame] = {}
    is_real = rows["_source"] == "real"
    for exp in EXPERIMENTS:
        is_exp = rows[EXPERIMENT] == exp
        out[(exp, None)] = rows[is_exp & is_real]
        synth = rows[is_exp & ~is_real]
        arm = synth[POLICY] if POLICY in synth.columns else pd.Series("", index=synth.index)  # round 1: none
        for policy in POLICIES:
            out[(exp, policy)] = synth[arm == policy]
    return out


def arm_training_set(
    arms: dict[tuple[str, str | None], pd.DataFrame], experiment: str, policy: str, k: int, seed: int = 0
) -> pd.DataFrame:
    """The training set of round k of one arm under its own policy, built by `build_training_set`."""
    real = arms[(experiment, None)]
    real = real[real["_round"] <= k]
    if k == 0:
        return real
    synth = arms[(experiment, policy)]
    rounds = synth["_round"]
    earlier = synth[rounds < k]
    return build_training_set(
        AccumulateSpec(policy=policy),
        real=real,
        previous=earlier,
        new_synthetic=synth[rounds == k],
        round_index=k,
        seed=seed,
        group_by=[data.RUN],
        pool=earlier,
    )


def _real_per_run(arms: dict, experiment: str) -> int:
    real = arms[(experiment, None)]
    counts = real[real["_round"] == 0].groupby(data.RUN).size()
    if counts.empty or counts.nunique() != 1:
        raise ValueError(f"collapse study: every {experiment} run needs the same number of real rows")
    return int(counts.iloc[0])


def generate(ctx: Any) -> pd.DataFrame:
    """Python backend function: one round of every arm."""
    arms = split_arms(ctx.training_set)
    k = ctx.round_index - 1
    rng = ctx.rng
    sigma = float(ctx.params.get("sigma", 1.0))
    out = []
    for exp in EXPERIMENTS:
        m = _real_per_run(arms, exp)
        for policy in POLICIES:
            ts = arm_training_set(arms, exp, policy, k, _subsample_seed(ctx))
            if exp == "gaussian":
                part = gaussian.sample(gaussian.fit(ts), m, rng)
            else:
                cols = linear.features(ts)
                runs, w = linear.fit(ts)
                x = linear.real_design(arms[(exp, None)], data.RUN, runs, m, cols)
                part = linear.table(runs, x, linear.sample(w, x, sigma, rng), cols, data.RUN)
            part.insert(0, POLICY, policy)
            part.insert(0, EXPERIMENT, exp)
            out.append(part)
    table = pd.concat(out, ignore_index=True)
    if len(table) != ctx.n:
        raise ValueError(
            f"collapse study: one round of every arm is {len(table)} rows; set generate.rows_per_round (and "
            f"candidate_budget) to {len(table)}"
        )
    return table


def history(rows: pd.DataFrame, last_round: int, *, data_seed: int = 0, seed: int = 0) -> pd.DataFrame:
    """Every arm's error for the models fitted on the training sets of rounds 0..last_round."""
    recs = []
    arms = split_arms(rows)
    lin_real = arms[("linear", None)]
    d = len(linear.features(lin_real))
    t = _real_per_run(arms, "linear")
    n_runs = int(lin_real[data.RUN].max()) + 1
    w_true = data.true_weights(n_runs, d, data_seed)
    base = theory.ols_error(d, t)
    for k in range(last_round + 1):
        for policy in POLICIES:
            g = gaussian.fit(arm_training_set(arms, "gaussian", policy, k, seed))
            runs, w = linear.fit(arm_training_set(arms, "linear", policy, k, seed))
            ratio = linear.excess_error(w, w_true[runs]) / base
            recs += [
                {
                    "round": k,
                    "policy": policy,
                    "metric": "gaussian_median_var",
                    "value": float(g["var"].median()),
                },
                {
                    "round": k,
                    "policy": policy,
                    "metric": "gaussian_mean_sq",
                    "value": float((g["mean"] ** 2).mean()),
                },
                {"round": k, "policy": policy, "metric": "linear_error_ratio", "value": float(ratio.mean())},
            ]
    return pd.DataFrame(recs)


def report(ctx: Any) -> dict[str, Any]:
    """Report function: this round's numbers per arm and the plot of error against round per policy."""
    rows = ctx.training_set
    r = ctx.round_index
    hist = history(rows, r, data_seed=int(ctx.params.get("data_seed", 0)), seed=_subsample_seed(ctx))
    m = _real_per_run(split_arms(rows), "gaussian")
    rounds = pd.Index(range(r + 1))
    last = hist[hist["round"] == r]
    out: dict[str, Any] = {
        f"{rec.metric}_{rec.policy}": round(rec.value, 6) for rec in last.itertuples(index=False)
    }
    out["collapse_plot"] = panels_png(
        [
            {
                "title": "linear regression: test error / OLS error on the real data",
                "ylabel": "error ratio",
                "history": _metric(hist, "linear_error_ratio"),
                "theory": {
                    "replace: n": pd.Series([theory.replace_ratio(k + 1) for k in rounds], rounds),
                    "accumulate: sum 1/i^2 < pi^2/6": pd.Series(
                        [theory.accumulate_ratio(k + 1) for k in rounds], rounds
                    ),
                },
            },
            {
                "title": f"1-D Gaussian, {m} rows a run: fitted variance (median over runs)",
                "ylabel": "variance (truth: 1)",
                "history": _metric(hist, "gaussian_median_var"),
                "theory": {
                    "replace: exp(-n/(M-1))": pd.Series(
                        [theory.gaussian_replace_median_variance(k + 1, m) for k in rounds], rounds
                    )
                },
            },
        ],
        title=f"Model collapse after round {r}: replace drifts, accumulate stays bounded",
    )
    return out


def _subsample_seed(ctx: Any) -> int:
    """The accumulate_subsample arm draws its rows with this seed (and the round): the generator and the report
    must draw the same rows, whatever request seed a round used."""
    return int(ctx.params.get("subsample_seed", 0))


def _metric(hist: pd.DataFrame, metric: str) -> pd.DataFrame:
    return hist[hist["metric"] == metric][["round", "policy", "value"]]


if __name__ == "__main__":
    import sys

    write_seed(sys.argv[1], runs=20, gaussian_rows=20, linear_rows=30, d=5, seed=0)
