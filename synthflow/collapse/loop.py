"""Rounds of the self-consuming loop through the pipeline's own round machinery, without Dagster.

Each round is `run_round` with the python backend and the spec's accumulation policy, exactly as the p/round
asset runs it; only the store and the scheduling are left out, so hundreds of runs x hundreds of rounds fit in a
benchmark. Many independent runs travel in one table (`run` column, group_by: [run]).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from synthflow.collapse import data, gaussian, linear, theory
from synthflow.generators.python_backend import PythonGenerator
from synthflow.spec import PipelineSpec
from synthflow.stages.accumulate import real_rows
from synthflow.stages.cache import ResultCache
from synthflow.stages.round import RoundInputs, run_round
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
    workdir: str | Path | None = None,
) -> dict[int, dict[str, np.ndarray]]:
    """Fit `cfg.generations` models; returns {n: per-run metrics of model n}.

    Model 1 is fitted on the real data; model n on the training set of round n-1, which `run_round` built from
    model n-1's samples under the policy. Each round's request cache lives in a temporary store and is dropped
    after the round (every round's fit is new, so nothing could be served from it again).
    """
    spec = spec_for(cfg)
    tmp = Path(workdir or tempfile.mkdtemp(prefix="synthflow-collapse-"))
    store = Store(str(tmp))
    generator = PythonGenerator(
        f"synthflow.collapse.{cfg.model}:generate",
        group_by=[data.RUN],
        sigma=cfg.sigma,
        design=cfg.design,
    )
    real = real_data(cfg, 0, cfg.rows)
    seed_rows = real.iloc[0:0]
    out: dict[int, dict[str, np.ndarray]] = {1: metrics(cfg, real)}
    previous: pd.DataFrame | None = None
    pool: pd.DataFrame | None = None
    try:
        for r in range(1, cfg.generations):
            if cfg.fresh_rows:
                real = pd.concat([real, real_data(cfg, r, cfg.fresh_rows)], ignore_index=True)
            cache = ResultCache(store, f"{spec.name}-r{r}", chunk_size=1 << 30)
            result = run_round(
                RoundInputs(
                    spec=spec,
                    round_index=r,
                    seed=seed_rows,
                    real=real,
                    previous=previous,
                    generator=generator,
                    cache=cache,
                    pool=pool if cfg.policy == "accumulate_subsample" and cfg.use_pool else None,
                )
            )
            shutil.rmtree(cache.dir, ignore_errors=True)
            previous = result.training_set
            if cfg.policy == "accumulate_subsample":
                pool = pd.concat(
                    [p for p in (pool, result.new_synthetic) if p is not None], ignore_index=True
                )
            out[r + 1] = metrics(cfg, previous)
            if observe is not None:
                observe(r, previous)
    finally:
        if workdir is None:
            shutil.rmtree(tmp, ignore_errors=True)
    return out
