"""A persistent, incrementally updated vector index: semantic dedup against every earlier round without embedding
or loading their rows again.

Each round partition adds one chunk under `{store}/{pipeline}/_index/semantic/{embedder}/`:

- `vectors/{partition}.parquet`: the embeddings table, one row per text the round added to its training set
  (`_id`, `_text`, `vector` as a fixed-size list of float32, unit length). Read as one Parquet dataset it is the
  cache of every accepted row's embedding (DuckDB, Polars and pyarrow read the folder as it is).
- `{partition}.faiss`: a flat inner-product faiss index of those vectors, in row order (`faiss.write_index`).

Round r opens the chunks of the rounds before it (memory-mapped on a local disk, so the vectors stay on disk and
in the page cache, not in the round's own heap) and searches each; only the ids' column of the table is read.
Running a round again replaces its chunk, so the index always matches the rounds' current versions. The chunk is
keyed by the embedder's model id: vectors of another model are never compared.

Exact (flat) because a round queries a few hundred candidates a batch: one matrix product per chunk, no training,
no recall loss, and chunks are independent files a rerun can replace.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from synthflow.stages.diversity.vectors import load_faiss, unit_rows
from synthflow.stages.text_index import INDEX_DIR
from synthflow.store import Store

SEMANTIC_DIR = "semantic"


def model_slug(model_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in model_id)


@dataclass
class Chunk:
    partition: str
    index: object  # faiss.IndexFlatIP
    ids: np.ndarray  # object array of row ids, in the index's order


class VectorIndex:
    """The vector chunks of some round partitions for one embedder, searched chunk by chunk."""

    def __init__(self, store: Store, pipeline: str, model_id: str, dim: int):
        self.store = store
        self.pipeline = pipeline
        self.model_id = model_id
        self.dim = dim
        self.chunks: list[Chunk] = []

    # -- paths ---------------------------------------------------------------------------------------------------
    def _dir(self) -> str:
        return self.store.path(self.pipeline, INDEX_DIR, SEMANTIC_DIR, model_slug(self.model_id))

    def index_path(self, partition: str) -> str:
        return f"{self._dir()}/{partition}.faiss"

    def table_path(self, partition: str) -> str:
        return f"{self._dir()}/vectors/{partition}.parquet"

    def has(self, partition: str) -> bool:
        """Whether `partition`'s chunk is complete (the faiss file is written last)."""
        return bool(self.store.fs.exists(self.index_path(partition)))

    # -- reading -------------------------------------------------------------------------------------------------
    def load(self, partitions: Sequence[str]) -> VectorIndex:
        """Open the chunks of `partitions` (those never written add nothing)."""
        for p in partitions:
            if self.has(p):
                ids = pq.read_table(io.BytesIO(self.store.fs.cat_file(self.table_path(p))), columns=["_id"])
                self.chunks.append(Chunk(p, self._open(p), np.asarray(ids.column("_id").to_pylist(), dtype=object)))
        return self

    def _open(self, partition: str):
        faiss = load_faiss()
        path = self.index_path(partition)
        if self.store.local:
            index = faiss.read_index(path, faiss.IO_FLAG_MMAP)  # stays on disk: pages come in as searched
        else:
            index = faiss.deserialize_index(np.frombuffer(self.store.fs.cat_file(path), dtype=np.uint8))
        if index.d != self.dim:
            raise ValueError(f"{path}: vectors of dimension {index.d}, the embedder gives {self.dim}")
        return index

    def __len__(self) -> int:
        return sum(int(c.index.ntotal) for c in self.chunks)

    def nearest(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(cosine similarity, id) of the nearest indexed row for each query; -inf and None when the index is empty."""
        q = unit_rows(vectors) if len(vectors) else np.empty((0, self.dim), dtype=np.float32)
        best = np.full(len(q), -np.inf, dtype=np.float32)
        ids = np.full(len(q), None, dtype=object)
        for chunk in self.chunks:
            if not chunk.index.ntotal or not len(q):
                continue
            sim, pos = chunk.index.search(q, 1)
            sim, pos = sim[:, 0], pos[:, 0]
            better = sim > best
            best[better] = sim[better]
            ids[better] = chunk.ids[pos[better]]
        return best, ids

    def table(self, partitions: Sequence[str], columns: Sequence[str] | None = None) -> pa.Table:
        """The cached embeddings table of `partitions`, in partition order (chunks never written are skipped)."""
        parts = [
            pq.read_table(io.BytesIO(self.store.fs.cat_file(self.table_path(p))), columns=columns)
            for p in partitions
            if self.has(p)
        ]
        return pa.concat_tables(parts) if parts else _table([], [], np.empty((0, self.dim), np.float32))

    # -- writing -------------------------------------------------------------------------------------------------
    def write(self, partition: str, ids: Sequence[str], texts: Sequence[str], vectors: np.ndarray) -> None:
        """Store `partition`'s chunk, replacing one an earlier run of that round wrote, and search it too."""
        x = unit_rows(vectors) if len(vectors) else np.empty((0, self.dim), dtype=np.float32)
        if x.shape[1] != self.dim:
            raise ValueError(f"vectors have dimension {x.shape[1]}, the index {self.dim}")
        buf = io.BytesIO()
        pq.write_table(_table(ids, texts, x), buf, compression="zstd")
        self.store.write_bytes_atomic(self.table_path(partition), buf.getvalue())
        faiss = load_faiss()
        index = faiss.IndexFlatIP(self.dim)
        if len(x):
            index.add(x)
        self.store.write_bytes_atomic(self.index_path(partition), _serialize(index))
        self.chunks = [c for c in self.chunks if c.partition != partition]
        self.chunks.append(Chunk(partition, index, np.asarray(list(ids), dtype=object)))


def _table(ids: Sequence[str], texts: Sequence[str], x: np.ndarray) -> pa.Table:
    flat = pa.array(np.ascontiguousarray(x, dtype=np.float32).ravel(), type=pa.float32())
    return pa.table(
        {
            "_id": pa.array([str(i) for i in ids], type=pa.string()),
            "_text": pa.array([None if t is None else str(t) for t in texts], type=pa.string()),
            "vector": pa.FixedSizeListArray.from_arrays(flat, x.shape[1]),
        }
    )


def _serialize(index) -> bytes:
    # The bytes faiss.write_index would put in a file, so any fsspec target (object stores too) can hold them.
    return load_faiss().serialize_index(index).tobytes()


def table_vectors(table: pa.Table, dim: int) -> np.ndarray:
    """The `vector` column of an embeddings table as an (n, dim) float32 matrix."""
    if not table.num_rows:
        return np.empty((0, dim), dtype=np.float32)
    flat = table.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return np.asarray(flat, dtype=np.float32).reshape(-1, dim)
