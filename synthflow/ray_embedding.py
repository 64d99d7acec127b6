"""Embeddings through Ray Data: one SentenceTransformer per actor of a fixed pool, for texts too many for one process.

`RayDataEncoder` stands in for the SentenceTransformer inside synthflow's `Embedder` (via `Embedder.use_model`), so
the text-hash cache still decides what is embedded: only texts the cache has never seen reach Ray, and vectors come
back into the same cache (and its Parquet chunks). Each `encode` call is one Ray Data job whose actor pool loads the
model afresh, which pays off for a seed map of 100k texts, not for a verifier's handful: use it where the profile
embeds in bulk.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from synthflow.embedding import Embedder, resolve_device, resolve_model

__all__ = ["RayDataEncoder", "ray_embedder"]


class _EmbedBatch:
    """The Ray Data UDF: loads the model once per actor, embeds one batch of rows per call."""

    def __init__(self, model: str, device: str) -> None:
        from sentence_transformers import SentenceTransformer

        # Resolved here, on the worker: the offline copy of MiniLM lives in that node's site-packages.
        _, source = resolve_model(model)
        self._model = SentenceTransformer(source, device=resolve_device(device))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        vectors = self._model.encode(
            [str(t) for t in batch["text"]],
            batch_size=len(batch["text"]),
            convert_to_numpy=True,
            normalize_embeddings=False,
            show_progress_bar=False,
        )
        return {"i": batch["i"], "vector": np.asarray(vectors, dtype=np.float32)}


class RayDataEncoder:
    """The part of the SentenceTransformer API that `Embedder` uses, run as `map_batches` over an actor pool."""

    def __init__(
        self,
        model: str = "all-MiniLM-L6-v2",
        *,
        num_actors: int = 2,
        num_gpus_per_actor: float = 0,
        num_cpus_per_actor: float = 1,
        batch_size: int = 256,
        device: str = "auto",
    ) -> None:
        self.model = model
        self.num_actors = num_actors
        self.num_gpus_per_actor = num_gpus_per_actor
        self.num_cpus_per_actor = num_cpus_per_actor
        self.batch_size = batch_size
        self.device = device
        self._dim: int | None = None

    def encode(self, sentences: Sequence[str], batch_size: int | None = None, **_: Any) -> np.ndarray:
        """Vectors in the order of `sentences`, unnormalized (Embedder normalizes on the way out)."""
        import ray

        if not sentences:
            return np.empty((0, self.get_sentence_embedding_dimension()), dtype=np.float32)
        # A few blocks per actor: one block per item (Ray's default for small inputs) is pure scheduling overhead.
        blocks = min(len(sentences), 4 * self.num_actors)
        ds = ray.data.from_items(
            [{"i": i, "text": t} for i, t in enumerate(sentences)], override_num_blocks=blocks
        )
        out = ds.map_batches(
            _EmbedBatch,
            fn_constructor_kwargs={"model": self.model, "device": self.device},
            # Embedder passes its own (CPU-sized) batch size; a pool wants bigger batches than one process does,
            # but no bigger than a fair share, or some actors get nothing to do.
            batch_size=min(max(batch_size or 0, self.batch_size), math.ceil(len(sentences) / self.num_actors)),
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=min(self.num_actors, blocks)),
            num_cpus=self.num_cpus_per_actor,
            num_gpus=self.num_gpus_per_actor,
        )
        index: list[np.ndarray] = []
        vectors: list[np.ndarray] = []
        for batch in out.iter_batches(batch_size=None, batch_format="numpy"):
            index.append(batch["i"])
            vectors.append(np.asarray(batch["vector"], dtype=np.float32))
        result = np.empty((len(sentences), vectors[0].shape[1]), dtype=np.float32)
        result[np.concatenate(index)] = np.concatenate(vectors)  # Ray Data may reorder blocks
        self._dim = result.shape[1]
        return result

    def get_sentence_embedding_dimension(self) -> int:
        if self._dim is None:
            self.encode(["dimension probe"])
        assert self._dim is not None
        return self._dim


def ray_embedder(
    model: str = "all-MiniLM-L6-v2",
    *,
    cache_url: str | None = None,
    normalize: bool = True,
    **ray_options: Any,
) -> Embedder:
    """An `Embedder` (same cache, same keys as a local one of `model`) whose model runs through Ray Data."""
    emb = Embedder(model, cache_url=cache_url, normalize=normalize)
    emb.use_model(RayDataEncoder(model, **ray_options))
    return emb
