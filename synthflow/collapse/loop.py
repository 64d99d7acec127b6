"""Rounds of the self-consuming loop through the pipeline's own round driver, without Dagster.

Each round is a `RoundSession` with the python backend and the spec's accumulation policy, the driver the p/round
asset uses, in its light mode: the reads stay in memory (`RoundSession.carry`), nothing is stored, no check runs
and the request cache lives in a memory:// store for one round, so hundreds of runs x hundreds of rounds fit in a
benchmark. Many independent runs travel in one table (`run` column, group_by: [run]).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from synthflow.collapse import data, gaussian, linear, theory
from synthflow.generators.python_backend import PythonGenerator
from synthflow.spec import PipelineSpec
from synthflow.stages.accumulate import real_rows
from synthflow.stages.session import RoundReads, RoundSession
from synthflow.store import Store

Model = Literal["gaussian", "linear"]
Policy = Literal["accumulate", "replace", "accumulate_subsample"]


@dataclass(frozen=True)
class LoopConfig:
    model: Model
    policy: Policy
    runs: int
    rows: int  # real rows per run (M or T) and rows per run each round brings
    generations: int  # models fitted: n = 1 is the fit on the real data, n on the training set of round n-1
    d: int = 10
    sigma: float = 1.0
    fresh_real: float = 0.0  # fraction of each round's rows that is fresh real data
    design: str = "fixed"
    seed: int = 0
    use_pool: bool = True  # accumulate_subsample: draw from every earlier row (False: from r-1's subsample)

    @property
    def fresh_rows(self) -> int:
        return int(round(self.fresh_real * self.rows))

    @property
    def synthetic_rows(self) -> int:
        return self.rows - self.fresh_rows


def spec_for(cfg: LoopConfig) -> PipelineSpec:
    """The pipeline spec of one arm: the same sections a YAML file would hold."""
    cols = [data.RUN, data.VALUE] + (data.feature_columns(cfg.d) if cfg.model == "linear" else [])
    props = {c: {"type": "integer" if c == data.RUN else "number"} for c in cols}
    n = cfg.runs * cfg.synthetic_rows
    return PipelineSpec.model_validate(
        {
            "name": f"collapse_{cfg.model}_{cfg.policy}",
            "seed": {
                "source": "real.jsonl",
                "text": data.RUN,
                "columns": [{"name": c, "type": "integer" if c == data.RUN else "float"} for c in cols],
            },
            "generate": {
                "generator": "collapse",
                "prompt": f"{cfg.model} self-consuming loop, round {{{{ round }}}}",
                "few_shot": 0,
                "output_schema": {"type": "object", "properties": props, "required": cols},
                "rows_per_round": n,
                "candidate_budget": n,
                "sampling": {"seed": cfg.seed},
            },
            "verify": [],
            "accumulate": {"policy": cfg.policy, "subsample_size": cfg.rows},
        }
    )


def real_data(cfg: LoopConfig, round_index: int, runs_rows: int) -> pd.DataFrame:
    if cfg.model == "gaussian":
        rows = data.gaussian_rows(
            cfg.runs, runs_rows, seed=cfg.seed, round_index=round_index, sigma=cfg.sigma
        )
    else:
        rows = data.linear_rows(
            cfg.runs, runs_rows, cfg.d, seed=cfg.seed, round_index=round_index, sigma=cfg.sigma
        )
    rows["_id"] = [f"real-{round_index}-{i}" for i in range(len(rows))]
    rows["_text"] = rows[data.RUN].astype(str)
    rows["_round"] = round_index
    return real_rows(rows, list(rows.columns[:-3]), round_index)


def metrics(cfg: LoopConfig, training_set: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per-run numbers of the model fitted on this training set."""
    if cfg.model == "gaussian":
        fits = gaussian.fit(training_set, group=data.RUN)
        return {"mean_sq": fits["mean"].to_numpy() ** 2, "var": fits["var"].to_numpy()}
    runs, w = linear.fit(training_set, group=data.RUN)
    w_true = data.true_weights(cfg.runs, cfg.d, cfg.seed)[runs]
    base = theory.ols_error(cfg.d, cfg.rows, cfg.sigma**2)
    return {"error_ratio": linear.excess_error(w, w_true) / base}


def run_loop(
    cfg: LoopConfig,
    *,
    observe: Callable[[int, pd.DataFrame], None] | None = None,
) -> dict[int, dict[str, np.ndarray]]:
    """Fit `cfg.generations` models; returns {n: per-run metrics of model n}.

    Model 1 is fitted on the real data; model n on the training set of round n-1, which the round built from
    model n-1's samples under the policy.
    """
    spec = spec_for(cfg)
    store = Store(f"memory://synthflow-collapse-{uuid.uuid4().hex}")
    generator = PythonGenerator(
        f"synthflow.collapse.{cfg.model}:generate",
        group_by=[data.RUN],
        sigma=cfg.sigma,
        design=cfg.design,
    )
    real = real_data(cfg, 0, cfg.rows)
    out: dict[int, dict[str, np.ndarray]] = {1: metrics(cfg, real)}
    keys = [f"r{r}" for r in range(1, cfg.generations)]
    session = RoundSession(
        spec, store, spec.name, keys[:1], persist=False, checks=(), plots=False, keep_cache=False
    )
    reads = RoundReads(seed=real.iloc[0:0], real=real, previous=None, pool=None)
    try:
        for r in range(1, cfg.generations):
            if cfg.fresh_rows:
                reads.real = pd.concat([reads.real, real_data(cfg, r, cfg.fresh_rows)], ignore_index=True)
            if not cfg.use_pool:  # accumulate_subsample draws from r-1's subsample only
                reads.pool = None
            session = dataclasses.replace(session, partitions=keys[:r])
            result = session.run(reads, generators={spec.generate.generator: lambda: generator})
            reads = session.carry(reads, result)
            out[r + 1] = metrics(cfg, reads.previous)
            if observe is not None:
                observe(r, reads.previous)
    finally:
        if store.fs.exists(store.path()):
            store.fs.rm(store.path(), recursive=True)
    return out
