"""An exact cosine-similarity index over reference (seed/real) and synthetic rows, for semantic dedup of candidates.

Exact (faiss IndexFlatIP) because a round queries a few dozen candidates at a time against at most a few million
rows: one matrix product, no training, no recall loss, and rows can be added one batch at a time.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from synthflow.stages.diversity.vectors import load_faiss, unit_rows

KINDS = ("reference", "synthetic")


@dataclass
class Nearest:
    """The nearest indexed row of each query: cosine similarity (-inf when none), its id and kind (None when none)."""

    similarity: np.ndarray
    id: np.ndarray
    kind: np.ndarray

    def __len__(self) -> int:
        return len(self.similarity)


class SimilarityIndex:
    """Rows of two kinds, "reference" (seed and real data) and "synthetic" (accepted rows), searchable by cosine."""

    def __init__(self, dim: int):
        faiss = load_faiss()

        self.dim = dim
        self._index = {kind: faiss.IndexFlatIP(dim) for kind in KINDS}
        self._ids: dict[str, list] = {kind: [] for kind in KINDS}
        self._known: dict[str, set] = {kind: set() for kind in KINDS}

    def __len__(self) -> int:
        return sum(len(v) for v in self._ids.values())

    def count(self, kind: str) -> int:
        return len(self._ids[self._check(kind)])

    def ids(self, kind: str) -> list:
        return list(self._ids[self._check(kind)])

    def __contains__(self, key: tuple[str, object]) -> bool:
        kind, row_id = key
        return row_id in self._known[self._check(kind)]

    @staticmethod
    def _check(kind: str) -> str:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        return kind

    def add(self, vectors: np.ndarray, ids: Sequence, kind: str) -> None:
        kind = self._check(kind)
        x = unit_rows(vectors)
        ids = list(ids)
        if len(ids) != len(x):
            raise ValueError(f"{len(ids)} ids for {len(x)} vectors")
        if x.shape[1] != self.dim:
            raise ValueError(f"vectors have dimension {x.shape[1]}, index {self.dim}")
        if len(x):
            self._index[kind].add(x)
            self._ids[kind].extend(ids)
            self._known[kind].update(ids)

    def nearest(self, vectors: np.ndarray, kinds: Iterable[str] = KINDS) -> Nearest:
        """The single nearest row among `kinds` for each query vector."""
        q = unit_rows(vectors)
        n = len(q)
        best = Nearest(
            similarity=np.full(n, -np.inf, dtype=np.float32),
            id=np.full(n, None, dtype=object),
            kind=np.full(n, None, dtype=object),
        )
        for kind in kinds:
            kind = self._check(kind)
            index = self._index[kind]
            if index.ntotal == 0 or n == 0:
                continue
            sim, pos = index.search(q, 1)
            sim, pos = sim[:, 0], pos[:, 0]
            better = sim > best.similarity
            best.similarity[better] = sim[better]
            ids = self._ids[kind]
            best.id[better] = [ids[p] for p in pos[better]]
            best.kind[better] = kind
        return best


def within_batch(vectors: np.ndarray, threshold: float, skip: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """First-come greedy dedup inside one batch.

    Returns (duplicate_of, similarity): for each row, the position of the most similar earlier *kept* row when
    that similarity reaches `threshold`, else -1, and that similarity (-inf when no earlier row); rows flagged in `skip` (already rejected for another
    reason) are never kept and never make another row a duplicate.
    """
    x = unit_rows(vectors)
    n = len(x)
    dup = np.full(n, -1, dtype=np.int64)
    best = np.full(n, -np.inf, dtype=np.float32)
    skip = np.zeros(n, dtype=bool) if skip is None else np.asarray(skip, dtype=bool)
    kept = np.zeros(n, dtype=bool)
    sim = x @ x.T
    for i in range(n):
        if skip[i]:
            continue
        earlier = np.flatnonzero(kept[:i])
        if len(earlier):
            j = int(earlier[np.argmax(sim[i, earlier])])
            best[i] = sim[i, j]
            if sim[i, j] >= threshold:
                dup[i] = j
                continue
        kept[i] = True
    return dup, best
