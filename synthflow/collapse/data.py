"""Real data for the collapse experiments and the true parameters it comes from.

Everything is drawn from seeded generators, so the truth a report measures against can be recomputed from the
recipe's parameters instead of being stored beside the data.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

VALUE = "y"  # the sampled value (Gaussian) or the regression target (linear)
RUN = "run"


def feature_columns(d: int) -> list[str]:
    return [f"x{i}" for i in range(d)]


def true_weights(runs: int, d: int, seed: int) -> np.ndarray:
    """One true coefficient vector per run, (runs, d). The OLS error does not depend on them; any will do."""
    rng = np.random.default_rng([seed, 11])
    return rng.standard_normal((runs, d)) / np.sqrt(d)


def gaussian_rows(
    runs: int, m: int, *, seed: int, round_index: int = 0, mu: float = 0.0, sigma: float = 1.0
) -> pd.DataFrame:
    """`m` draws of N(mu, sigma^2) per run (round_index > 0: fresh real data arriving in that round)."""
    rng = np.random.default_rng([seed, round_index, 21])
    y = mu + sigma * rng.standard_normal((runs, m))
    return pd.DataFrame({RUN: np.repeat(np.arange(runs), m), VALUE: y.ravel()})


def linear_rows(
    runs: int, t: int, d: int, *, seed: int, round_index: int = 0, sigma: float = 1.0
) -> pd.DataFrame:
    """`t` rows per run with x ~ N(0, I_d) and y = x.w* + N(0, sigma^2)."""
    rng = np.random.default_rng([seed, round_index, 31])
    x = rng.standard_normal((runs, t, d))
    y = np.einsum("rtd,rd->rt", x, true_weights(runs, d, seed)) + sigma * rng.standard_normal((runs, t))
    out = pd.DataFrame(x.reshape(runs * t, d), columns=feature_columns(d))
    out.insert(0, RUN, np.repeat(np.arange(runs), t))
    out[VALUE] = y.ravel()
    return out
