"""The 1-D Gaussian self-consuming loop: refit mean and unbiased variance per run, sample the next round.

Python backend function: `synthflow.collapse.gaussian:generate`. Rows: `run` (with group_by: [run]) and `y`.
Each run gets `ctx.n / runs` new rows; runs are fitted and sampled together, as array operations.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from synthflow.collapse.data import RUN, VALUE


def fit(frame: pd.DataFrame, *, group: str | None = RUN, ddof: int = 1) -> pd.DataFrame:
    """Per run: mean, variance (ddof=1: the unbiased refit of Shumailov et al.) and row count."""
    keys = frame[group] if group else pd.Series(0, index=frame.index)
    g = frame[VALUE].groupby(keys.to_numpy(), sort=True)
    return pd.DataFrame({"mean": g.mean(), "var": g.var(ddof=ddof), "rows": g.size()})


def sample(fits: pd.DataFrame, m: int, rng: np.random.Generator, *, group: str | None = RUN) -> pd.DataFrame:
    mu = fits["mean"].to_numpy()
    sd = np.sqrt(fits["var"].to_numpy())
    y = mu[:, None] + sd[:, None] * rng.standard_normal((len(fits), m))
    out = pd.DataFrame({VALUE: y.ravel()})
    if group:
        out.insert(0, group, np.repeat(fits.index.to_numpy(), m))
    return out


def rows_per_group(n: int, groups: int) -> int:
    if groups == 0 or n % groups:
        raise ValueError(
            f"{n} rows were asked for {groups} runs; set rows_per_round to a multiple of the number of runs"
        )
    return n // groups


def generate(ctx: Any) -> pd.DataFrame:
    group = ctx.group_by[0] if ctx.group_by else None
    fits = fit(ctx.training_set, group=group, ddof=int(ctx.params.get("ddof", 1)))
    return sample(fits, rows_per_group(ctx.n, len(fits)), ctx.rng, group=group)
