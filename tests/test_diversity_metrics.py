"""Coverage and diversity metrics, bulk semantic dedup, and the coverage plot."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("faiss")

from synthflow.stages.diversity import (  # noqa: E402
    cluster_shares,
    coverage_metrics,
    distinct_n,
    kl_divergence,
    near_duplicate_rate,
    semantic_dedup,
    share_ratio,
    under_covered,
    vendi_score,
    vendi_score_exact,
)


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def vendi_by_definition(x, q=1.0):
    """Friedman & Dieng: exp of the entropy of the eigenvalues of K/n, K the n x n cosine-similarity matrix."""
    x = np.asarray(x, dtype=np.float64)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    lam = np.linalg.eigvalsh(x @ x.T / len(x))
    lam = lam[lam > 1e-15]
    if q == 1:
        return float(np.exp(-np.sum(lam * np.log(lam))))
    return float(np.sum(lam**q) ** (1 / (1 - q)))


@pytest.mark.parametrize("n,d", [(50, 384), (400, 16), (300, 300)])
def test_vendi_matches_the_n_by_n_definition(n, d):
    rng = np.random.default_rng(n)
    centres = rng.standard_normal((8, d))
    x = centres[rng.integers(0, 8, n)] + 0.7 * rng.standard_normal((n, d))
    x = x.astype(np.float32)
    expected = vendi_by_definition(x)
    assert vendi_score(x) == pytest.approx(expected, rel=1e-9)
    assert vendi_score(x, chunk_rows=7) == pytest.approx(expected, rel=1e-9)  # chunking changes nothing
    assert vendi_score_exact(x) == pytest.approx(expected, rel=1e-9)
    assert vendi_score(x, q=2) == pytest.approx(vendi_by_definition(x, q=2), rel=1e-9)


def test_vendi_bounds():
    assert vendi_score(np.ones((100, 8))) == pytest.approx(1.0)  # all the same: one item
    assert vendi_score(np.eye(10)) == pytest.approx(10.0)  # orthogonal: all distinct
    assert vendi_score(np.empty((0, 8))) == 0.0


def test_shares_ratios_and_kl():
    shares = cluster_shares(np.array([0, 0, 0, 1]), 3)
    np.testing.assert_allclose(shares, [0.75, 0.25, 0])
    ratio = share_ratio(shares, np.array([0.5, 0.5, 0.0]))
    np.testing.assert_allclose(ratio[:2], [1.5, 0.5])
    assert np.isnan(ratio[2])  # no target: never under-covered
    assert under_covered(ratio).tolist() == []
    assert under_covered(share_ratio(shares, np.array([0.4, 0.3, 0.3]))).tolist() == [2]
    p = np.array([0.5, 0.3, 0.2])
    assert kl_divergence(p, p) == pytest.approx(0, abs=1e-6)  # only the smoothing
    q = np.array([0.999 + 0.001 / 3, 0.001 / 3, 0.001 / 3])  # empty clusters cost a finite amount
    assert kl_divergence(p, np.array([1.0, 0, 0])) == pytest.approx(np.sum(p * np.log(p / q)), rel=1e-9)


def test_distinct_n():
    texts = ["the cat sat", "the cat ran", "The CAT sat!"]
    assert distinct_n(texts, 1) == pytest.approx(4 / 9)
    assert distinct_n(texts, 2) == pytest.approx(3 / 6)
    assert distinct_n([], 2) == 0.0 and distinct_n(["one"], 2) == 0.0


def brute_force_greedy(x, threshold):
    x = unit(x)
    sim = x @ x.T
    keep = np.ones(len(x), dtype=bool)
    for i in range(len(x)):
        earlier = np.flatnonzero(keep[:i])
        if len(earlier) and sim[i, earlier].max() >= threshold:
            keep[i] = False
    return keep


def planted(n, d, n_dup, seed=0, noise=0.2):
    rng = np.random.default_rng(seed)
    x = unit(rng.standard_normal((40, d))[rng.integers(0, 40, n)] + rng.standard_normal((n, d)))
    src = rng.choice(n, n_dup, replace=False)
    copies = unit(x[src] + noise * unit(rng.standard_normal((n_dup, d))))
    return np.concatenate([x, copies]), src


def test_semantic_dedup_exact_path_equals_brute_force():
    x, _ = planted(800, 32, 100)
    res = semantic_dedup(x, 0.9)
    np.testing.assert_array_equal(res.keep, brute_force_greedy(x, 0.9))
    dropped = np.flatnonzero(~res.keep)
    assert (res.duplicate_of[dropped] < dropped).all() and res.keep[res.duplicate_of[dropped]].all()
    assert (res.similarity[dropped] >= 0.9).all() and np.isnan(res.similarity[res.keep]).all()
    assert res.n_removed == len(dropped) and res.rate == pytest.approx(len(dropped) / len(x))


def test_semantic_dedup_bucketed_path_finds_the_planted_copies():
    x, src = planted(6000, 48, 600, seed=1)
    exact = semantic_dedup(x, 0.9)
    bucketed = semantic_dedup(x, 0.9, exact_below=0)
    copies = np.arange(6000, 6600)
    assert (~exact.keep[copies]).all()
    assert (~bucketed.keep[copies]).mean() >= 0.99
    assert np.mean(bucketed.keep == exact.keep) > 0.995


def test_near_duplicate_rate():
    x, _ = planted(300, 32, 30, noise=0.05)
    assert near_duplicate_rate(x, 0.95) == pytest.approx(30 / 330, abs=0.01)
    assert near_duplicate_rate(np.empty((0, 4))) == 0.0


def test_coverage_metrics_are_json_ready():
    import json

    rng = np.random.default_rng(0)
    x = unit(rng.standard_normal((60, 16)))
    target = np.array([0.5, 0.3, 0.2])
    m = coverage_metrics(target, rng.integers(0, 2, 60), x, ["a b c", "a b d"] * 30)
    json.dumps(m)
    assert m["n_rows"] == 60 and m["k"] == 3 and m["under_covered"] == [2] and m["n_under_covered"] == 1
    assert set(m) >= {"shares", "share_ratio", "deficits", "kl", "kl_seed", "vendi", "near_duplicate_rate",
                      "distinct_1", "distinct_2"}
    empty = coverage_metrics(target, np.array([], dtype=int))
    assert empty["n_rows"] == 0 and empty["kl"] is None and empty["n_under_covered"] == 3


def test_coverage_plot_is_a_png():
    from synthflow.stages.diversity import coverage_plot

    rng = np.random.default_rng(0)
    seed = unit(rng.standard_normal((200, 16)))
    synth = unit(rng.standard_normal((50, 16)))
    png = coverage_plot(seed, rng.integers(0, 4, 200), synth, rng.integers(0, 2, 50), np.full(4, 0.25),
                        title="round 3")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    empty = coverage_plot(seed, rng.integers(0, 4, 200), np.empty((0, 16)), np.array([], dtype=int), np.full(4, 0.25))
    assert empty[:4] == b"\x89PNG"
