"""The seed map: k-means clusters of the seed embeddings, the reference distribution that gap filling aims at.

Why faiss and not usearch: the seed map needs k-means, and faiss has a tested, BLAS-backed k-means (with
empty-cluster splitting and subsampling) next to the exact inner-product index that assignment and semantic dedup
use; usearch is an excellent HNSW index but has no clustering of its own, so choosing it would mean a second
library or a hand-written k-means. At our sizes (seeds of 10^2..10^6 rows, k <= 50) exact search is cheap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from synthflow.stages.diversity.vectors import count_distinct, load_faiss, unit_rows


def choose_k(n: int) -> int:
    """k for a seed of n rows when the spec leaves it out: about sqrt(n/2), between 2 and 50, never above n."""
    return int(min(n, max(2, min(50, round(math.sqrt(n / 2))))))


def similarities_to(embeddings: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(label, cosine similarity) of each row's nearest centroid, by inner product on normalized vectors."""
    faiss = load_faiss()

    x = unit_rows(embeddings)
    c = unit_rows(centroids)
    if len(x) == 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
    index = faiss.IndexFlatIP(c.shape[1])
    index.add(c)
    sim, lab = index.search(x, 1)
    return lab[:, 0].astype(np.int64), sim[:, 0]


def assign(embeddings: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Cluster id of each embedding: its nearest centroid by cosine similarity."""
    return similarities_to(embeddings, centroids)[0]


@dataclass
class SeedMap:
    """Clusters of the seed embeddings.

    `labels`, `similarity` and `ids` run over the seed rows; `sizes`, `names` and `centroids` over the clusters.
    """

    centroids: np.ndarray  # (k, d) float32, unit length
    ids: np.ndarray  # (n,) seed row ids, object dtype
    labels: np.ndarray  # (n,) int64 cluster of each seed row
    similarity: np.ndarray  # (n,) float32 cosine similarity of each seed row to its centroid
    names: list[str] = field(default_factory=list)  # display names; "0".."k-1" unless set

    def __post_init__(self) -> None:
        if not self.names:
            self.names = [str(i) for i in range(self.k)]
        if len(self.names) != self.k:
            raise ValueError(f"{len(self.names)} names for {self.k} clusters")

    @property
    def k(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def dim(self) -> int:
        return int(self.centroids.shape[1])

    @property
    def sizes(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=self.k).astype(np.int64)

    @property
    def shares(self) -> np.ndarray:
        n = len(self.labels)
        return self.sizes / n if n else np.zeros(self.k)

    def members(self, cluster: int) -> np.ndarray:
        """Positions of the seed rows of `cluster`, closest to its centroid first."""
        pos = np.flatnonzero(self.labels == cluster)
        return pos[np.argsort(-self.similarity[pos], kind="stable")]

    def exemplars(self, cluster: int, n: int | None = None) -> list:
        """Ids of the seed rows of `cluster`, closest to its centroid first (the first `n` when given)."""
        pos = self.members(cluster)
        return list(self.ids[pos[:n] if n is not None else pos])

    @property
    def exemplar_ids(self) -> list[list]:
        """For every cluster, all its seed ids, closest to the centroid first."""
        return [self.exemplars(c) for c in range(self.k)]

    def cluster_index(self, key: int | str) -> int:
        """Cluster id for an id (int or numeric string) or a name."""
        if isinstance(key, str) and key in self.names:
            return self.names.index(key)
        try:
            i = int(key)
        except (TypeError, ValueError):
            raise KeyError(f"no cluster named {key!r}; names: {self.names}") from None
        if not 0 <= i < self.k:
            raise KeyError(f"cluster {i} out of range 0..{self.k - 1}")
        return i

    def assign(self, embeddings: np.ndarray) -> np.ndarray:
        return assign(embeddings, self.centroids)

    # -- storage as tables -----------------------------------------------------------------------------------

    def to_tables(self) -> dict[str, pd.DataFrame]:
        """Two tables: `clusters` (one row per cluster, centroid as a list) and `assignments` (one per seed row)."""
        rank = np.empty(len(self.labels), dtype=np.int64)
        for c in range(self.k):
            pos = self.members(c)
            rank[pos] = np.arange(len(pos))
        clusters = pd.DataFrame(
            {
                "cluster": np.arange(self.k, dtype=np.int64),
                "name": self.names,
                "size": self.sizes,
                "share": self.shares,
                "centroid": list(self.centroids.astype(np.float32)),
            }
        )
        assignments = pd.DataFrame(
            {"id": self.ids, "cluster": self.labels, "similarity": self.similarity, "rank": rank}
        )
        return {"clusters": clusters, "assignments": assignments}

    @classmethod
    def from_tables(cls, tables: dict[str, pd.DataFrame]) -> SeedMap:
        clusters = tables["clusters"].sort_values("cluster")
        assignments = tables["assignments"]
        centroids = np.stack([np.asarray(c, dtype=np.float32) for c in clusters["centroid"]])
        return cls(
            centroids=centroids,
            ids=np.asarray(assignments["id"].to_numpy(), dtype=object),
            labels=assignments["cluster"].to_numpy(dtype=np.int64),
            similarity=assignments["similarity"].to_numpy(dtype=np.float32),
            names=[str(n) for n in clusters["name"]],
        )


def kmeans_pp_init(x: np.ndarray, k: int, rng: np.random.Generator, sample: int = 20_000) -> np.ndarray:
    """Greedy k-means++ seeding (Arthur & Vassilvitskii 2007; the variant scikit-learn uses) on a sample of unit rows.

    faiss starts from k random rows; on a skewed seed (a few big topics, a long tail) that puts several
    centroids in the head and merges tail topics, which are exactly the clusters gap filling must see. Plain
    k-means++ still wastes picks on a big head; trying 2 + log k candidates per pick and keeping the one that
    lowers the potential most does not.
    """
    pts = x[rng.choice(len(x), sample, replace=False)] if len(x) > sample else x
    trials = 2 + int(math.log(max(k, 1)))
    chosen = [int(rng.integers(len(pts)))]
    d2 = np.clip(2.0 - 2.0 * (pts @ pts[chosen[0]]), 0, None)
    for _ in range(1, k):
        total = float(d2.sum())
        if total <= 0:
            break
        cand = rng.choice(len(pts), trials, p=d2 / total)
        cand_d2 = np.minimum(d2[None, :], np.clip(2.0 - 2.0 * (pts[cand] @ pts.T), 0, None))
        best = int(np.argmin(cand_d2.sum(axis=1)))
        chosen.append(int(cand[best]))
        d2 = cand_d2[best]
    return np.ascontiguousarray(pts[chosen], dtype=np.float32)


def build_seed_map(
    embeddings: np.ndarray,
    ids: Sequence | np.ndarray,
    k: int | None = None,
    seed: int = 0,
    *,
    niter: int = 25,
    restarts: int = 5,
    names: list[str] | None = None,
) -> SeedMap:
    """Spherical k-means (faiss) of the seed embeddings; `k` from the seed size when None.

    Training uses a 20,000-row sample (faiss would subsample to 256 rows per centroid anyway); the best of
    `restarts` runs (highest mean cosine to the assigned centroid) is kept, because topics with sub-structure
    (templates, sub-topics) otherwise end in a local optimum that splits one topic and merges two others.
    """
    faiss = load_faiss()

    x = unit_rows(embeddings)
    ids = np.asarray(list(ids), dtype=object)
    if len(ids) != len(x):
        raise ValueError(f"{len(ids)} ids for {len(x)} embeddings")
    if len(x) == 0:
        raise ValueError("cannot build a seed map from an empty seed")
    k = choose_k(len(x)) if k is None else int(k)
    # Fewer distinct rows than k would leave clusters empty; only small seeds can have that few.
    k = min(k, count_distinct(x, limit=max(20_000, 100 * k)))
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if k == 1:
        centroids = unit_rows(x.mean(axis=0, keepdims=True))
    else:
        rng = np.random.default_rng(seed)
        sample = x[rng.choice(len(x), 20_000, replace=False)] if len(x) > 20_000 else x
        best_score = -np.inf
        for attempt in range(max(1, restarts)):
            # Seeding reads every sample row once per pick; 100 rows per centroid place them as well as 400.
            init = kmeans_pp_init(sample, k, rng, sample=max(5_000, 100 * k))
            km = faiss.Kmeans(x.shape[1], len(init), niter=niter, seed=seed + attempt, spherical=True, verbose=False)
            km.cp.min_points_per_centroid = 1  # small seeds are fine for us; silences faiss's warning
            km.train(sample, init_centroids=init)
            cand = unit_rows(km.centroids.astype(np.float32))
            score = float(similarities_to(sample, cand)[1].mean())
            if score > best_score:
                best_score, centroids = score, cand
    labels, sim = similarities_to(x, centroids)
    return SeedMap(centroids=centroids, ids=ids, labels=labels, similarity=sim, names=names or [])
