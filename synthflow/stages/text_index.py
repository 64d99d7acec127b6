"""A persistent, incrementally updated set of text hashes: exact dedup against every earlier round without loading
their rows.

Each round partition adds one immutable chunk, the sorted 64-bit hashes of the normalized texts it accepted, at
`{store}/{pipeline}/_index/{name}/{partition}.u64`. Round r loads the chunks of the partitions before it (8 bytes
a row instead of the rows themselves) and writes its own; running a round again replaces that round's chunk, so
the index always matches the rounds' current versions. Hashes are pandas' keyed 64-bit hash of the text that
`synthflow.text.normalize_text` gives, the normalization the `exact_dedup` verifier compares.
"""

from __future__ import annotations

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
        self._chunks: list[np.ndarray] = []

    def _path(self, partition: str) -> str:
        return self.store.path(self.pipeline, INDEX_DIR, self.name, f"{partition}.u64")

    def load(self, partitions: Sequence[str]) -> TextIndex:
        """Load the chunks of `partitions` (those never written add nothing)."""
        fs = self.store.fs
        for p in partitions:
            path = self._path(p)
            if fs.exists(path):
                self._chunks.append(np.frombuffer(fs.cat_file(path), dtype="<u8"))
        return self

    def __len__(self) -> int:
        return sum(len(c) for c in self._chunks)

    @property
    def nbytes(self) -> int:
        return sum(c.nbytes for c in self._chunks)

    def contains(self, hashes: np.ndarray) -> np.ndarray:
        """Whether each hash is in the index."""
        found = np.zeros(len(hashes), dtype=bool)
        for chunk in self._chunks:
            if not len(chunk):
                continue
            pos = np.searchsorted(chunk, hashes)
            found |= chunk[np.minimum(pos, len(chunk) - 1)] == hashes
        return found

    def write(self, partition: str, hashes: np.ndarray) -> None:
        """Store `partition`'s chunk (replacing one written by an earlier run of that round) and search it too."""
        chunk = np.unique(np.asarray(hashes, dtype=np.uint64)).astype("<u8")
        self.store.write_bytes_atomic(self._path(partition), chunk.tobytes())
        self._chunks.append(chunk)
