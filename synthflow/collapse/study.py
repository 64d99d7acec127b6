"""The collapse_study example: 1-D Gaussians and linear regression under the three policies, side by side.

One pipeline carries every arm as columns (`experiment`, `policy`, `run`) and accumulates everything, so each
round's training set holds the whole history of every arm. Each arm's generator is fitted on the rows its own
policy keeps, computed by `build_training_set` with that policy (the function p/training_set uses), so
replace, accumulate and accumulate_subsample run in one materialization with the same real data and seeds, and
the report can redraw every arm's error at every earlier round from the pipeline's own rows.

Real rows (the seed) carry no `policy`: every arm starts from the same real data. The truth the errors are
measured against comes from the recipe that wrote the seed (synthflow.collapse.recipe; the generator options
`sigma2` and `data_seed` must be the recipe's, which `recipe.write_study` sees to).
"""

from __future__ import annotations

import json
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
    sigma = noise_variance(ctx.params) ** 0.5
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


METRICS = ("gaussian_median_var", "gaussian_mean_sq", "linear_error_ratio")
SERIES = "collapse_series"  # p/coverage key: every figure of rounds 0..r, {metric_policy: [value per round]}


def round_figures(
    arms: dict[tuple[str, str | None], pd.DataFrame],
    k: int,
    *,
    w_true: np.ndarray,
    base: float,
    seed: int = 0,
) -> dict[str, float]:
    """Every arm's numbers for the models fitted on the training sets of round k: {metric_policy: value}.

    `base` is the expected OLS error on the real data at the run's noise, sigma^2 d / (T-d-1), so the linear
    ratio is the theory's (replace: n, accumulate: sum 1/i^2) at any sigma^2.
    """
    out: dict[str, float] = {}
    for policy in POLICIES:
        g = gaussian.fit(arm_training_set(arms, "gaussian", policy, k, seed))
        runs, w = linear.fit(arm_training_set(arms, "linear", policy, k, seed))
        out[f"gaussian_median_var_{policy}"] = float(g["var"].median())
        out[f"gaussian_mean_sq_{policy}"] = float((g["mean"] ** 2).mean())
        out[f"linear_error_ratio_{policy}"] = float((linear.excess_error(w, w_true[runs]) / base).mean())
    return out


def _truth(arms: dict, data_seed: int, sigma2: float) -> tuple[np.ndarray, float]:
    """(true weights per run, the OLS error on the real data at noise sigma2) of the recipe that wrote the seed."""
    lin_real = arms[("linear", None)]
    d = len(linear.features(lin_real))
    t = _real_per_run(arms, "linear")
    n_runs = int(lin_real[data.RUN].max()) + 1
    return data.true_weights(n_runs, d, data_seed), theory.ols_error(d, t, sigma2)


def history(
    rows: pd.DataFrame, last_round: int, *, data_seed: int = 0, seed: int = 0, sigma2: float = 1.0
) -> pd.DataFrame:
    """Every arm's error for the models fitted on the training sets of rounds 0..last_round, recomputed from the
    rows (the report's fallback when no earlier round's figures are stored, and the reference its tests use)."""
    arms = split_arms(rows)
    w_true, base = _truth(arms, data_seed, sigma2)
    series = {
        key: [value]
        for key, value in round_figures(arms, 0, w_true=w_true, base=base, seed=seed).items()
    }
    for k in range(1, last_round + 1):
        for key, value in round_figures(arms, k, w_true=w_true, base=base, seed=seed).items():
            series[key].append(value)
    return series_frame(series)


def series_frame(series: dict[str, list[float]]) -> pd.DataFrame:
    """{metric_policy: [value per round]} as the long table (round, policy, metric, value) the plot reads."""
    recs = []
    for metric in METRICS:
        for policy in POLICIES:
            for k, value in enumerate(series.get(f"{metric}_{policy}", [])):
                recs.append({"round": k, "policy": policy, "metric": metric, "value": value})
    return pd.DataFrame(recs, columns=["round", "policy", "metric", "value"])


def stored_series(previous_coverage: dict[str, Any] | None, rounds: int) -> dict[str, list[float]] | None:
    """The figures of rounds 0..rounds-1 from round r-1's stored coverage, or None when they are not there
    (round 1, a light-mode run, a store written before they were kept) or do not cover exactly those rounds."""
    raw = (previous_coverage or {}).get(SERIES)
    if raw is None:
        return None
    series = json.loads(raw) if isinstance(raw, str) else raw
    keys = [f"{m}_{p}" for m in METRICS for p in POLICIES]
    if not isinstance(series, dict) or any(len(series.get(k, ())) != rounds for k in keys):
        return None
    return {k: [float(v) for v in series[k]] for k in keys}


def report(ctx: Any) -> dict[str, Any]:
    """Report function: this round's numbers per arm and the plot of error against round per policy.

    O(new round): the figures of rounds 0..r-1 come from round r-1's stored coverage (`collapse_series`, which
    this function wrote there), so only round r's models are fitted; without them every round is recomputed.
    """
    rows = ctx.training_set
    r = ctx.round_index
    seed = _subsample_seed(ctx)
    sigma2 = noise_variance(ctx.params)
    arms = split_arms(rows)
    w_true, base = _truth(arms, int(ctx.params.get("data_seed", 0)), sigma2)
    series = stored_series(getattr(ctx, "previous_coverage", None), r)
    if series is None:
        series = {k: [v] for k, v in round_figures(arms, 0, w_true=w_true, base=base, seed=seed).items()}
        for k in range(1, r):
            for key, value in round_figures(arms, k, w_true=w_true, base=base, seed=seed).items():
                series[key].append(value)
    last = round_figures(arms, r, w_true=w_true, base=base, seed=seed)
    series = {k: [*v, last[k]] for k, v in series.items()}
    hist = series_frame(series)
    m = _real_per_run(arms, "gaussian")
    rounds = pd.Index(range(r + 1))
    out: dict[str, Any] = {k: round(v, 6) for k, v in last.items()}
    out[SERIES] = series
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


def noise_variance(params: dict[str, Any]) -> float:
    """The linear experiment's noise variance sigma^2 (generator option `sigma2`, default 1): the generator labels
    with it and the report divides by the OLS error at it. It must be the one the seed was written with."""
    return float(params.get("sigma2", 1.0))


def _subsample_seed(ctx: Any) -> int:
    """The accumulate_subsample arm draws its rows with this seed (and the round): the generator and the report
    must draw the same rows, whatever request seed a round used."""
    return int(ctx.params.get("subsample_seed", 0))


def _metric(hist: pd.DataFrame, metric: str) -> pd.DataFrame:
    return hist[hist["metric"] == metric][["round", "policy", "value"]]

