"""The collapse benchmark's code reproduces the theory at parameters other than the benchmark's (the formulas are
general), through run_round and the policies, with small run counts and tolerances of about 3 standard errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from synthflow.collapse import theory
from synthflow.collapse.loop import LoopConfig, run_loop


@pytest.mark.parametrize(
    ("policy", "expected"),
    [("accumulate", theory.accumulate_ratio(20)), ("replace", theory.replace_ratio(20))],
)
def test_linear_regression_d5_t60(policy, expected):
    res = run_loop(LoopConfig("linear", policy, runs=100, rows=60, generations=20, d=5, seed=11))
    ratio = res[20]["error_ratio"].mean()
    assert abs(ratio / expected - 1) < 0.2, (policy, ratio, expected)
    if policy == "accumulate":
        assert ratio < theory.ACCUMULATE_BOUND * 1.2


def test_linear_subsample_plateaus_between_accumulate_and_replace():
    res = run_loop(
        LoopConfig("linear", "accumulate_subsample", runs=40, rows=60, generations=40, d=5, seed=5)
    )
    at20, at40 = res[20]["error_ratio"].mean(), res[40]["error_ratio"].mean()
    assert theory.accumulate_ratio(40) * 1.3 < at40 < 0.25 * 40
    assert at40 < 1.35 * at20, "a plateau, not linear growth"


def test_gaussian_m50_replace_variance_collapses():
    res = run_loop(LoopConfig("gaussian", "replace", runs=200, rows=50, generations=40, seed=3))
    median = float(np.median(res[40]["var"]))
    assert abs(math.log(median / theory.gaussian_replace_median_variance(40, 50))) < math.log(1.5)
    assert median < np.median(res[10]["var"]), "the variance keeps shrinking"


def test_gaussian_m50_accumulate_mean_stays_bounded():
    res = run_loop(LoopConfig("gaussian", "accumulate", runs=400, rows=50, generations=15, seed=4))
    mu2 = res[15]["mean_sq"].mean()
    assert abs(mu2 / theory.gaussian_accumulate_mean_sq(15, 50) - 1) < 0.25
    assert abs(res[15]["var"].mean() - 1) < 0.05


def test_gaussian_m50_fresh_real_fraction_bounds_the_mean():
    g = 0.2
    res = run_loop(LoopConfig("gaussian", "replace", runs=150, rows=50, generations=30, fresh_real=g, seed=6))
    mu2 = np.mean([res[n]["mean_sq"] for n in range(16, 31)], axis=0).mean()
    assert abs(mu2 / theory.gaussian_fresh_mean_sq(50, g) - 1) < 0.25
