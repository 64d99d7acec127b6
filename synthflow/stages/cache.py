"""Generation results stored as they arrive, keyed by the request hash, in chunk files.

A killed round that is run again finds every result that reached a chunk and re-sends only the rest; a round
re-materialized with new verifiers re-sends nothing. Chunks are never rewritten, so concurrent writers cannot
clobber each other.
"""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Iterable

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from synthflow.generators.base import GenerationResult
from synthflow.store import Store

_COLUMNS = ["key", "text", "model", "prompt_tokens", "completion_tokens", "finish_reason", "error", "retries"]


class ResultCache:
    def __init__(self, store: Store, pipeline: str, chunk_size: int = 32):
        self.store = store
        self.dir = store.path(pipeline, "_cache", "generations")
        self.chunk_size = chunk_size
        self._results: dict[str, GenerationResult] | None = None
        self._pending: list[GenerationResult] = []

    def _load(self) -> dict[str, GenerationResult]:
        if self._results is None:
            self._results = {}
            fs = self.store.fs
            if fs.exists(self.dir):
                for p in sorted(x for x in fs.ls(self.dir, detail=False) if x.endswith(".parquet")):
                    with fs.open(p, "rb") as f:
                        for rec in pq.read_table(f).to_pylist():
                            self._results[rec["key"]] = GenerationResult(**rec)
        return self._results

    def get(self, key: str) -> GenerationResult | None:
        return self._load().get(key)

    def __contains__(self, key: str) -> bool:
        return key in self._load()

    def __len__(self) -> int:
        return len(self._load())

    def put(self, result: GenerationResult) -> None:
        """Keep a result; failed requests are not cached, so a rerun tries them again."""
        if result.error:
            return
        self._load()[result.key] = result
        self._pending.append(result)
        if len(self._pending) >= self.chunk_size:
            self.flush()

    def put_many(self, results: Iterable[GenerationResult]) -> None:
        for r in results:
            self.put(r)

    def flush(self) -> None:
        if not self._pending:
            return
        table = pd.DataFrame([{c: getattr(r, c) for c in _COLUMNS} for r in self._pending], columns=_COLUMNS)
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pandas(table, preserve_index=False), buf)
        self.store.write_bytes_atomic(
            f"{self.dir}/{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet", buf.getvalue()
        )
        self._pending = []
