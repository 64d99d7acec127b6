"""BASELINE ONLY, for bench/scale.py (S1): a copy of synthflow's store as it was before issue 14.

Every write is a whole new Parquet file named by a hash of the whole table (through an in-memory Arrow IPC copy),
plus a JSON version record; nothing is appended. It is kept here, outside the package, so S1 can measure today's
rewrite-per-round cost against the Delta store in the same run. Do not use it for anything else.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq


@dataclass(frozen=True)
class LegacyRecord:
    pipeline: str
    asset: str
    partition: str
    version: str
    rows: int
    written_at: float
    meta: dict[str, Any]


def legacy_content_hash(table: pd.DataFrame) -> str:
    arrow = pa.Table.from_pandas(table, preserve_index=False).replace_schema_metadata(None)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, arrow.schema) as writer:
        writer.write_table(arrow)
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()[:20]


class LegacyStore:
    """{root}/{pipeline}/{asset}/{partition}/data/{hash}.parquet + versions/{stamp}-{hash}.json (the old layout)."""

    def __init__(self, root: str):
        self.root = root.rstrip("/")
        self.fs, self._base = fsspec.core.url_to_fs(self.root)

    def _dir(self, pipeline: str, asset: str, partition: str | None) -> str:
        return f"{self._base}/{pipeline}/{asset}/{partition or '_'}"

    def write(self, pipeline: str, asset: str, table: pd.DataFrame, partition: str | None = None,
              meta: dict[str, Any] | None = None) -> LegacyRecord:  # fmt: skip
        version = legacy_content_hash(table)
        d = self._dir(pipeline, asset, partition)
        data_path = f"{d}/data/{version}.parquet"
        if not self.fs.exists(data_path):
            buf = io.BytesIO()
            pq.write_table(pa.Table.from_pandas(table, preserve_index=False), buf, compression="zstd")
            self._atomic(data_path, buf.getvalue())
        rec = LegacyRecord(pipeline, asset, partition or "_", version, len(table), time.time(), meta or {})
        self._atomic(f"{d}/versions/{time.time_ns():020d}-{version}.json",
                     json.dumps(rec.__dict__, sort_keys=True, default=str).encode())  # fmt: skip
        return rec

    def _atomic(self, path: str, data: bytes) -> None:
        parent = path.rsplit("/", 1)[0]
        tmp = f"{parent}/.tmp-{uuid.uuid4().hex}"
        self.fs.makedirs(parent, exist_ok=True)
        with self.fs.open(tmp, "wb") as f:
            f.write(data)
        self.fs.mv(tmp, path)

    def latest(self, pipeline: str, asset: str, partition: str | None = None) -> LegacyRecord | None:
        d = f"{self._dir(pipeline, asset, partition)}/versions"
        if not self.fs.exists(d):
            return None
        last = sorted(x for x in self.fs.ls(d, detail=False) if x.endswith(".json"))[-1]
        with self.fs.open(last, "rb") as f:
            return LegacyRecord(**json.loads(f.read()))

    def read(self, pipeline: str, asset: str, partition: str | None = None) -> pd.DataFrame:
        rec = self.latest(pipeline, asset, partition)
        assert rec is not None
        with self.fs.open(f"{self._dir(pipeline, asset, partition)}/data/{rec.version}.parquet", "rb") as f:
            return pq.read_table(f).to_pandas()
