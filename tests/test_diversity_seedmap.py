"""The seed map: k-means clusters of the seed embeddings, stored as tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("faiss")

from synthflow.stages.diversity import SeedMap, assign, build_seed_map, choose_k  # noqa: E402
from tests.fixtures.embedder import TOPIC_NAMES, topic_seed  # noqa: E402


def blobs(weights, n, d=32, spread=0.25, seed=0):
    """Unit vectors around len(weights) random directions, cluster sizes by weight."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((len(weights), d))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    truth = rng.choice(len(weights), n, p=np.asarray(weights) / np.sum(weights))
    x = centres[truth] + spread * rng.standard_normal((n, d)) / np.sqrt(d)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), truth


def purity(labels, truth):
    return sum(np.bincount(truth[labels == c]).max() for c in np.unique(labels)) / len(labels)


def test_choose_k():
    assert [choose_k(n) for n in (1, 3, 8, 200, 5000, 10**6)] == [1, 2, 2, 10, 50, 50]


def test_shapes_and_exemplar_order():
    x, _ = blobs([1, 1, 1, 1], 400)
    ids = [f"r{i}" for i in range(400)]
    m = build_seed_map(x, ids, k=4)
    assert m.k == 4 and m.dim == 32 and m.centroids.shape == (4, 32)
    np.testing.assert_allclose(np.linalg.norm(m.centroids, axis=1), 1, atol=1e-5)
    assert m.labels.shape == (400,) and m.sizes.sum() == 400 and m.shares.sum() == pytest.approx(1)
    for c in range(4):
        ex = m.exemplars(c)
        assert len(ex) == m.sizes[c]
        sims = x[[ids.index(e) for e in ex]] @ m.centroids[c]
        assert np.all(np.diff(sims) <= 1e-6)  # closest to the centroid first
    assert m.exemplars(0, 3) == m.exemplar_ids[0][:3]
    np.testing.assert_array_equal(m.assign(x), m.labels)
    np.testing.assert_array_equal(assign(x, m.centroids), m.labels)


def test_default_k_and_tiny_seeds():
    x, _ = blobs([1, 1], 200)
    assert build_seed_map(x, range(200)).k == choose_k(200)
    one = build_seed_map(x[:1], ["only"])
    assert one.k == 1 and one.exemplars(0) == ["only"]
    # Fewer distinct rows than k: k shrinks instead of leaving empty clusters.
    same = build_seed_map(np.repeat(x[:2], 5, axis=0), range(10), k=5)
    assert same.k == 2 and (same.sizes == 5).all()


def test_skewed_seed_keeps_its_tail_clusters():
    weights = 1 / np.arange(1, 21)  # Zipf: the head is 20x the tail
    x, truth = blobs(weights, 6000, d=64, seed=3)
    m = build_seed_map(x, range(6000), k=20)
    assert purity(m.labels, truth) > 0.98
    assert (m.sizes > 0).all()


def test_tables_round_trip(tmp_path):
    x, _ = blobs([2, 1, 1], 300)
    m = build_seed_map(x, [f"id{i}" for i in range(300)], k=3, names=["big", "a", "b"])
    tables = m.to_tables()
    assert list(tables["clusters"].columns) == ["cluster", "name", "size", "share", "centroid"]
    assert list(tables["assignments"].columns) == ["id", "cluster", "similarity", "rank"]
    for name, t in tables.items():  # survive Parquet, as the store writes them
        t.to_parquet(tmp_path / f"{name}.parquet")
    back = SeedMap.from_tables({n: pd.read_parquet(tmp_path / f"{n}.parquet") for n in tables})
    np.testing.assert_allclose(back.centroids, m.centroids)
    np.testing.assert_array_equal(back.labels, m.labels)
    assert back.names == ["big", "a", "b"] and back.exemplar_ids == m.exemplar_ids
    assert back.cluster_index("a") == 1 and back.cluster_index("2") == 2 and back.cluster_index(0) == 0
    with pytest.raises(KeyError):
        back.cluster_index("nope")


def test_minilm_seed_map_finds_the_topics(minilm):
    seed = topic_seed(12, np.random.default_rng(0))
    m = build_seed_map(minilm.encode(seed["_text"].tolist()), seed["_id"], k=len(TOPIC_NAMES))
    truth = seed["topic"].map(TOPIC_NAMES.index).to_numpy()
    assert purity(m.labels, truth) > 0.95
