"""The linear-regression self-consuming loop of Gerstgrasser et al. (COLM 2024).

Each generation fits OLS per run on its training set, then labels the design with its own predictions plus
N(0, sigma^2) noise. The design is the run's real x's (`design: fixed`, as in the paper, so the error follows the
theory exactly) or fresh x ~ N(0, I) (`design: fresh`). Python backend function:
`synthflow.collapse.linear:generate`; rows: `run`, `x0..x{d-1}`, `y`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from synthflow.collapse.data import RUN, VALUE
from synthflow.collapse.gaussian import rows_per_group


def features(frame: pd.DataFrame) -> list[str]:
    cols = [c for c in frame.columns if isinstance(c, str) and c[:1] == "x" and c[1:].isdigit()]
    return sorted(cols, key=lambda c: int(c[1:]))


def _by_group(frame: pd.DataFrame, group: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows sorted by group: (group keys, start offsets, row order)."""
    keys = frame[group].to_numpy() if group else np.zeros(len(frame), dtype=int)
    order = np.argsort(keys, kind="stable")
    uniq, starts = np.unique(keys[order], return_index=True)
    return uniq, starts, order


def fit(frame: pd.DataFrame, *, group: str | None = RUN) -> tuple[np.ndarray, np.ndarray]:
    """OLS per run: (run keys, coefficients of shape (runs, d))."""
    cols = features(frame)
    uniq, starts, order = _by_group(frame, group)
    x = frame[cols].to_numpy(dtype=float)[order]
    y = frame[VALUE].to_numpy(dtype=float)[order]
    sizes = np.diff(np.r_[starts, len(order)])
    if len(uniq) and (sizes == sizes[0]).all():
        # Equal runs (every policy here keeps them equal): one batched solve instead of a loop.
        xs = x.reshape(len(uniq), sizes[0], len(cols))
        ys = y.reshape(len(uniq), sizes[0])
        xtx = xs.transpose(0, 2, 1) @ xs
        xty = (xs.transpose(0, 2, 1) @ ys[..., None])[..., 0]
    else:
        xtx = np.stack([x[s : s + k].T @ x[s : s + k] for s, k in zip(starts, sizes, strict=True)])
        xty = np.stack([x[s : s + k].T @ y[s : s + k] for s, k in zip(starts, sizes, strict=True)])
    return uniq, np.linalg.solve(xtx, xty[..., None])[..., 0]


def excess_error(w: np.ndarray, w_true: np.ndarray) -> np.ndarray:
    """Excess test error per run for x ~ N(0, I): ||w - w*||^2."""
    return ((w - w_true) ** 2).sum(axis=1)


def sample(w: np.ndarray, x: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Labels for designs x (runs, m, d) from coefficients w (runs, d): x.w + N(0, sigma^2)."""
    return (x @ w[..., None])[..., 0] + sigma * rng.standard_normal(x.shape[:2])


def generate(ctx: Any) -> pd.DataFrame:
    group = ctx.group_by[0] if ctx.group_by else None
    sigma = float(ctx.params.get("sigma", 1.0))
    runs, w = fit(ctx.training_set, group=group)
    m = rows_per_group(ctx.n, len(runs))
    cols = features(ctx.training_set)
    rng = ctx.rng
    if ctx.params.get("design", "fixed") == "fixed":
        x = real_design(ctx.real, group, runs, m, cols)
    else:
        x = rng.standard_normal((len(runs), m, len(cols)))
    return table(runs, x, sample(w, x, sigma, rng), cols, group)


def table(runs: np.ndarray, x: np.ndarray, y: np.ndarray, cols: list[str], group: str | None) -> pd.DataFrame:
    out = pd.DataFrame(x.reshape(-1, len(cols)), columns=cols)
    if group:
        out.insert(0, group, np.repeat(runs, x.shape[1]))
    out[VALUE] = y.ravel()
    return out


def real_design(
    real: pd.DataFrame, group: str | None, runs: np.ndarray, m: int, cols: list[str]
) -> np.ndarray:
    """The x's of each run's first real rows, (runs, m, d): the fixed design every generation relabels."""
    first = real[real["_round"] == real["_round"].min()] if "_round" in real.columns else real
    uniq, starts, order = _by_group(first, group)
    sizes = np.diff(np.r_[starts, len(order)])
    if not np.array_equal(uniq, runs) or (sizes != m).any():
        raise ValueError(
            f"design: fixed relabels each run's {sizes.min() if len(sizes) else 0} real rows, but {m} rows a run "
            "were asked for; make rows_per_round = runs x real rows per run, or use design: fresh"
        )
    return first[cols].to_numpy(dtype=float)[order].reshape(len(runs), m, len(cols))
