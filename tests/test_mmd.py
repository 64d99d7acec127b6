"""The real-vs-synthetic distance: unbiased MMD^2 against its n x n definition, what it sees, and the `max_mmd`
coverage gate on a round's p/coverage through the session's checks."""

from __future__ import annotations

import numpy as np
import pytest

from synthflow.spec import PipelineSpec
from synthflow.stages.diversity.mmd import median_bandwidth, mmd2_unbiased, subsample
from synthflow.stages.session import coverage_checks


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_matches_the_definition():
    rng = np.random.default_rng(1)
    x, y = _unit(rng.standard_normal((30, 8))), _unit(rng.standard_normal((40, 8)) + 0.3)
    h2 = median_bandwidth(y)

    def k(a, b):
        return np.exp(-np.sum((a - b) ** 2) / (2 * h2))

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(a, b) for a in x for b in y) / (m * n)
    assert mmd2_unbiased(x, y) == pytest.approx(xx + yy - 2 * xy, rel=1e-9, abs=1e-12)


def _two_clusters(rng, n: int, axis: int, noise: float) -> np.ndarray:
    """Half the rows near +e_axis, half near -e_axis (mean ~0), unit-normalized."""
    x = noise * rng.standard_normal((n, 16))
    x[:, axis] += np.where(np.arange(n) % 2, 1.0, -1.0)
    return _unit(x)


def test_sees_shift_and_narrowing_the_cosine_kernel_misses():
    rng = np.random.default_rng(2)
    seed = _two_clusters(rng, 300, 0, 0.3)
    same = _two_clusters(rng, 300, 0, 0.3)
    shifted = _unit(_two_clusters(rng, 300, 0, 0.3) + 0.8 * np.eye(16)[1])
    narrowed = _two_clusters(rng, 300, 0, 0.03)  # the same two modes, a tenth of the spread
    base = mmd2_unbiased(same, seed)
    assert abs(base) < 0.01  # unbiased: ~0 for equal distributions
    assert mmd2_unbiased(shifted, seed) > 10 * max(abs(base), 1e-3)
    assert mmd2_unbiased(narrowed, seed) > 10 * max(abs(base), 1e-3)
    # The cosine kernel's MMD^2 is the distance between the means, which narrowing leaves where it was.
    assert np.sum((narrowed.mean(axis=0) - seed.mean(axis=0)) ** 2) < abs(base) + 0.01


def test_subsample_is_bounded_and_seeded():
    x = np.arange(1000)[:, None].astype(float)
    a = subsample(x, 50, np.random.default_rng(7))
    b = subsample(x, 50, np.random.default_rng(7))
    assert len(a) == 50 and np.array_equal(a, b) and np.all(np.diff(a[:, 0]) > 0)
    assert subsample(x[:10], 50, np.random.default_rng(0)).shape == (10, 1)


def _spec(**diversity) -> PipelineSpec:
    return PipelineSpec.model_validate(
        {
            "name": "gate",
            "seed": {"source": "s.jsonl", "text": "t", "columns": [{"name": "t", "type": "string"}]},
            "generate": {
                "prompt": "p",
                "output_schema": {"type": "object", "properties": {"t": {"type": "string"}}, "required": ["t"]},
            },
            "diversity": diversity,
        }
    )


def test_max_mmd_gate():
    assert not [c for c in coverage_checks(_spec(), {"mmd": 0.5}) if c.name == "max_mmd"]
    spec = _spec(max_mmd=0.1, reference_rows=64)
    (ok,) = [c for c in coverage_checks(spec, {"mmd": 0.05, "mmd_rows": 64}) if c.name == "max_mmd"]
    (bad,) = [c for c in coverage_checks(spec, {"mmd": 0.2}) if c.name == "max_mmd"]
    (none,) = [c for c in coverage_checks(spec, {}) if c.name == "max_mmd"]
    assert ok.passed and not bad.passed and not none.passed
    assert ok.asset == "coverage" and not ok.blocking and bad.metadata == {"value": 0.2, "threshold": 0.1}
