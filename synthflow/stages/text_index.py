"""A persistent, incrementally updated set of text hashes: exact dedup against every earlier round without loading
their rows.

Each round partition adds one immutable chunk, the sorted 64-bit hashes of the normalized texts it accepted, at
`{store}/{pipeline}/_index/{name}/{partition}.u64`. Round r opens the chunks of the partitions before it and
writes its own. On a local store each lookup memory-maps the chunks and binary-searches them, touching a few pages
of each: a round reads O(new rows x rounds x log) bytes of the index, not 8 bytes per accumulated row, and holds no
descriptor between lookups. On an object store each chunk is fetched whole (8 bytes a row, still not the rows).
Running a round again replaces that round's chunk, so the index always matches the rounds' current versions.
Hashes are pandas' keyed 64-bit hash of the text that `synthflow.text.normalize_text` gives, the normalization the
`exact_dedup` verifier compares.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from synthflow.store import Store
from synthflow.text import normalize_text

INDEX_DIR = "_index"


def text_hashes(texts: Iterable[str | None]) -> np.ndarray:
    """64-bit hashes of the normalized texts (stable across processes and machines)."""
    norm = np.array([normalize_text(t) for t in texts], dtype=object)
    return pd.util.hash_array(norm, categorize=False).astype(np.uint64)


class TextIndex:
    """The hash chunks of some round partitions, searched chunk by chunk (each is sorted)."""

    def __init__(self, store: Store, pipeline: str, name: str = "exact_dedup"):
        self.store = store
        self.pipeline = pipeline
        self.name = name
        self._chunks: list[np.ndarray] = []  # fetched whole (object stores)
        self._mapped: list[tuple[str, int]] = []  # (path, rows): memory-mapped per lookup (local stores)

    def _path(self, partition: str) -> str:
        return self.store.path(self.pipeline, INDEX_DIR, self.name, f"{partition}.u64")

    def load(self, partitions: Sequence[str]) -> TextIndex:
        """Open the chunks of `partitions` (those never written add nothing)."""
        fs = self.store.fs
        for p in partitions:
            path = self._path(p)
            if not fs.exists(path):
                continue
            if self.store.local:
                self._mapped.append((path, os.path.getsize(path) // 8))
            else:
                self._chunks.append(np.frombuffer(fs.cat_file(path), dtype="<u8"))
        return self

    def __len__(self) -> int:
        return sum(len(c) for c in self._chunks) + sum(rows for _, rows in self._mapped)

    @property
    def nbytes(self) -> int:
        return 8 * len(self)

    def contains(self, hashes: np.ndarray) -> np.ndarray:
        """Whether each hash is in the index."""
        hashes = np.asarray(hashes, dtype=np.uint64)
        found = np.zeros(len(hashes), dtype=bool)
        for chunk in self._chunks:
            found |= _in_sorted(chunk, hashes)
        # Mapped for the lookup and unmapped after it: thousands of rounds must not hold thousands of descriptors.
        for path, _ in self._mapped:
            with open(path, "rb") as f:
                if not os.fstat(f.fileno()).st_size:  # a round run again that accepted nothing
                    continue
                m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            with m:
                chunk = np.frombuffer(m, dtype="<u8")
                found |= _in_sorted(chunk, hashes)
                del chunk  # the map cannot close while an array still points into it
        return found

    def write(self, partition: str, hashes: np.ndarray) -> None:
        """Store `partition`'s chunk (replacing one written by an earlier run of that round) and search it too."""
        chunk = np.unique(np.asarray(hashes, dtype=np.uint64)).astype("<u8")
        self.store.write_bytes_atomic(self._path(partition), chunk.tobytes())
        self._chunks.append(chunk)


def _in_sorted(chunk: np.ndarray, hashes: np.ndarray) -> np.ndarray:
    if not len(chunk):
        return np.zeros(len(hashes), dtype=bool)
    pos = np.searchsorted(chunk, hashes)
    return chunk[np.minimum(pos, len(chunk) - 1)] == hashes
