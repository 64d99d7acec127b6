"""What the model-collapse papers predict, as functions of the generation n (model n is fit on the data of n
rounds: the real data plus n-1 rounds of its own output)."""

from __future__ import annotations

import math

import numpy as np


def accumulate_ratio(n: int) -> float:
    """Linear regression, accumulate: test error / (sigma^2 d / (T-d-1)) = sum_{i<=n} 1/i^2 < pi^2/6
    (Gerstgrasser et al., COLM 2024)."""
    return float(np.sum(1.0 / np.arange(1, n + 1) ** 2))


ACCUMULATE_BOUND = math.pi**2 / 6


def replace_ratio(n: int) -> float:
    """Linear regression, replace: the error grows linearly, ratio = n (Gerstgrasser et al.; Dohmatob et al.)."""
    return float(n)


def ols_error(d: int, t: int, sigma2: float = 1.0) -> float:
    """Expected excess test error of OLS on t Gaussian rows in d dimensions: sigma^2 d / (t - d - 1)."""
    return sigma2 * d / (t - d - 1)


def gaussian_replace_median_variance(n: int, m: int) -> float:
    """1-D Gaussian refit on its own m samples (unbiased variance): the variance is a product of n independent
    chi^2_{m-1}/(m-1) factors, whose median is about exp(-n/(m-1)) -> 0 (Shumailov et al., Nature 2024)."""
    return math.exp(-n / (m - 1))


def gaussian_accumulate_mean_sq(n: int, m: int, sigma2: float = 1.0) -> float:
    """1-D Gaussian, accumulate: E[mu_n^2] = sigma^2/m * sum_{i<=n} 1/i^2 <= pi^2 sigma^2 / (6m)."""
    return sigma2 / m * accumulate_ratio(n)


def gaussian_fresh_mean_sq(m: int, g: float, sigma2: float = 1.0) -> float:
    """1-D Gaussian, each round's m rows = a fraction g of fresh real data + its own samples (replace):
    mu_{n+1} = (1-g) mu_n + noise of variance sigma^2/m, so E[mu^2] -> sigma^2 / (m g (2-g))."""
    return sigma2 / (m * g * (2 - g))
