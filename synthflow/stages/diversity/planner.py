"""GapPlanner: the coverage-driven prompt planner a round asks where to aim each new prompt.

It fits the round machinery's PromptPlanner protocol (synthflow.stages.round): `plan(n, rng)` returns one
(target cluster, exemplar rows) pair per prompt, `observe(accepted)` embeds and assigns the rows a batch accepted
so the next `plan` sees the new deficits, `report()` gives the coverage metrics for p/coverage.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from synthflow.stages.diversity.gaps import Target, allocate, deficits, target_shares
from synthflow.stages.diversity.metrics import coverage_metrics
from synthflow.stages.diversity.seedmap import SeedMap


def _texts(frame: pd.DataFrame) -> list[str]:
    return frame["_text"].fillna("").astype(str).tolist()


class GapPlanner:
    """Aims prompts at the seed clusters whose share of the accumulated synthetic rows is below target.

    `seed` is the seed table (with `_id`, `_text`) the map was built from; `synthetic` the synthetic rows accepted
    in earlier rounds (with `_text`), which count towards the shares; `synthetic_vectors` their embeddings when
    they are cached (the persistent vector index's table), so they are not embedded again.
    """

    def __init__(
        self,
        seed: pd.DataFrame,
        seed_map: SeedMap,
        embedder: Any,
        *,
        target: Target = "seed",
        exploration: float = 0.1,
        few_shot: int = 3,
        synthetic: pd.DataFrame | None = None,
        near_duplicate_threshold: float = 0.95,
        synthetic_vectors: np.ndarray | None = None,
    ):
        self.seed = seed.reset_index(drop=True)
        self.seed_map = seed_map
        self.embedder = embedder
        self.target = target_shares(seed_map, target)
        self.exploration = exploration
        self.few_shot = few_shot
        self.near_duplicate_threshold = near_duplicate_threshold
        pos_by_id = pd.Series(np.arange(len(self.seed)), index=self.seed["_id"].astype(str))
        ids = pd.Index(np.asarray(seed_map.ids).astype(str))
        self._seed_pos = pos_by_id.reindex(ids).to_numpy()  # seed-map row -> seed table row
        if np.isnan(self._seed_pos.astype(float)).any():
            raise ValueError("the seed map has ids that are not in the seed table; rebuild the seed map")
        self._members = [seed_map.members(c) for c in range(seed_map.k)]
        self._prev_vectors, self._prev_labels, self._prev_texts = self._embed(synthetic, synthetic_vectors)
        self._vectors: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []
        self._texts: list[str] = []
        self._planned = np.zeros(seed_map.k, dtype=np.int64)

    def _embed(
        self, frame: pd.DataFrame | None, vectors: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, list[str]]:
        if frame is None or len(frame) == 0:
            return np.empty((0, self.seed_map.dim), dtype=np.float32), np.empty(0, dtype=np.int64), []
        texts = _texts(frame)
        vectors = self.embedder.encode(texts) if vectors is None else vectors
        return vectors, self.seed_map.assign(vectors), texts

    # -- the PromptPlanner protocol ----------------------------------------------------------------------------

    def labels(self, cumulative: bool = True) -> np.ndarray:
        parts = ([self._prev_labels] if cumulative else []) + self._labels
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)

    def plan(self, n: int, rng: np.random.Generator) -> list[tuple[int, pd.DataFrame]]:
        d = deficits(self.target, self.labels(), self.seed_map.k, n_new=n)
        clusters = allocate(n, d, self.exploration, rng, target=self.target)
        self._planned += np.bincount(clusters, minlength=self.seed_map.k)
        out = []
        for c in clusters:
            members = self._members[c]
            take = min(self.few_shot, len(members))
            # Any member, not only the most central: the same three exemplars on every prompt breed clones.
            picked = members[np.sort(rng.choice(len(members), take, replace=False))] if take else members[:0]
            out.append((int(c), self.seed.iloc[self._seed_pos[picked].astype(np.int64)]))
        return out

    def observe(self, accepted: pd.DataFrame) -> None:
        vectors, labels, texts = self._embed(accepted)
        if len(labels):
            self._vectors.append(vectors)
            self._labels.append(labels)
            self._texts.extend(texts)

    def report(self) -> dict[str, Any]:
        seed_shares = self.seed_map.shares
        round_vectors = np.concatenate(self._vectors) if self._vectors else self._prev_vectors[:0]
        all_vectors = np.concatenate([self._prev_vectors, round_vectors])
        common = dict(seed_shares=seed_shares, near_duplicate_threshold=self.near_duplicate_threshold)
        return {
            "planner": "gap_filling",
            "clusters": self.seed_map.k,
            "exploration": self.exploration,
            "planned_per_cluster": self._planned.tolist(),
            "round_coverage": coverage_metrics(self.target, self.labels(False), round_vectors, self._texts, **common),
            "cumulative_coverage": coverage_metrics(
                self.target, self.labels(), all_vectors, self._prev_texts + self._texts, **common
            ),
        }

    # -- extras for p/coverage ---------------------------------------------------------------------------------

    def round_rows(self) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """This round's accepted rows so far: (embeddings, seed-map labels, texts)."""
        return self.synthetic_vectors(cumulative=False), self.labels(cumulative=False), list(self._texts)

    def seed_rows(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Seed-map rows at `positions`: (embeddings, their clusters, texts); embeds only those rows."""
        pos = np.asarray(positions, dtype=np.int64)
        texts = _texts(self.seed.iloc[self._seed_pos[pos].astype(np.int64)])
        vectors = self.embedder.encode(texts) if len(texts) else np.empty((0, self.seed_map.dim), np.float32)
        return vectors, self.seed_map.labels[pos], texts

    def synthetic_vectors(self, cumulative: bool = True) -> np.ndarray:
        parts = ([self._prev_vectors] if cumulative else []) + self._vectors
        return np.concatenate(parts) if parts else np.empty((0, self.seed_map.dim), dtype=np.float32)

    def plot(self, seed_embeddings: np.ndarray | None = None, title: str | None = None) -> bytes:
        """The coverage plot (PNG) of the cumulative synthetic rows against the seed."""
        from synthflow.stages.diversity.plots import coverage_plot

        if seed_embeddings is None:
            seed_embeddings = self.embedder.encode(_texts(self.seed.iloc[self._seed_pos.astype(np.int64)]))
        return coverage_plot(
            seed_embeddings,
            self.seed_map.labels,
            self.synthetic_vectors(),
            self.labels(),
            self.target,
            names=self.seed_map.names,
            title=title,
        )


def seed_map_from_frame(
    seed: pd.DataFrame, embedder: Any, k: int | None = None, random_seed: int = 0
) -> tuple[SeedMap, np.ndarray]:
    """Embed the seed table's `_text` and cluster it; returns the map and the seed embeddings."""
    from synthflow.stages.diversity.seedmap import build_seed_map

    vectors = embedder.encode(_texts(seed))
    return build_seed_map(vectors, seed["_id"].tolist(), k=k, seed=random_seed), vectors
