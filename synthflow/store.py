"""Versioned Parquet store over fsspec.

Layout under the root URL (a local folder by default, memory:// in tests, s3://, gs:// ... in production):

    {root}/{pipeline}/{asset}/{partition}/data/{version}.parquet     the table, named by its content hash
    {root}/{pipeline}/{asset}/{partition}/versions/{stamp}-{version}.json   one record per write, in write order

A write lands the data file first (temp name, then move) and the version record last, so a reader never sees a
version whose data is incomplete: the record is the commit. Data files are never overwritten or deleted, so every
earlier version stays readable. Identical content gets the identical version (the same file), which is what makes
Dagster data versions stable across re-materializations.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
import uuid
from dataclasses import dataclass
from typing import Any

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

UNPARTITIONED = "_"


@dataclass(frozen=True)
class VersionRecord:
    pipeline: str
    asset: str
    partition: str
    version: str
    rows: int
    written_at: float
    meta: dict[str, Any]

    @property
    def written_at_iso(self) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.written_at))


class VersionNotFound(LookupError):
    pass


def content_hash(table: pd.DataFrame) -> str:
    """A hash of the table's columns, types and values, independent of how it was produced or written."""
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    sink = pa.BufferOutputStream()
    # The IPC stream is a canonical byte form for a given schema and values; the schema's pandas metadata is dropped
    # because it records library versions, not content.
    arrow = arrow.replace_schema_metadata(None)
    with pa.ipc.new_stream(sink, arrow.schema) as writer:
        writer.write_table(arrow)
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()[:20]


class Store:
    """Tables by (pipeline, asset, partition), each write a new immutable version."""

    def __init__(self, root: str):
        self.root = root.rstrip("/")
        self.fs, self._base = fsspec.core.url_to_fs(self.root)
        if self.fs.protocol in ("file", "local") or "file" in getattr(self.fs, "protocol", ()):
            os.makedirs(self._base, exist_ok=True)

    def __repr__(self) -> str:
        return f"Store({self.root!r})"

    # -- paths ---------------------------------------------------------------------------------------------------
    def _dir(self, pipeline: str, asset: str, partition: str | None) -> str:
        return f"{self._base}/{pipeline}/{asset}/{partition or UNPARTITIONED}"

    def path(self, *parts: str) -> str:
        """A path under the root for files the store does not version (caches)."""
        return "/".join([self._base, *parts])

    # -- writing -------------------------------------------------------------------------------------------------
    def write(
        self,
        pipeline: str,
        asset: str,
        table: pd.DataFrame,
        partition: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> VersionRecord:
        version = content_hash(table)
        d = self._dir(pipeline, asset, partition)
        data_path = f"{d}/data/{version}.parquet"
        if not self.fs.exists(data_path):
            self.write_bytes_atomic(data_path, _parquet_bytes(table))
        record = VersionRecord(
            pipeline, asset, partition or UNPARTITIONED, version, len(table), time.time(), meta or {}
        )
        stamp = f"{time.time_ns():020d}"
        self.write_bytes_atomic(
            f"{d}/versions/{stamp}-{version}.json",
            json.dumps({**record.__dict__}, sort_keys=True, default=str).encode(),
        )
        return record

    def write_bytes_atomic(self, path: str, data: bytes) -> None:
        """Write under a temporary name in the same folder, then move into place."""
        parent = path.rsplit("/", 1)[0]
        self.fs.makedirs(parent, exist_ok=True)
        tmp = f"{parent}/.tmp-{uuid.uuid4().hex}"
        with self.fs.open(tmp, "wb") as f:
            f.write(data)
        self.fs.mv(tmp, path)

    # -- reading -------------------------------------------------------------------------------------------------
    def versions(self, pipeline: str, asset: str, partition: str | None = None) -> list[VersionRecord]:
        """Every write of this (asset, partition), oldest first."""
        d = f"{self._dir(pipeline, asset, partition)}/versions"
        if not self.fs.exists(d):
            return []
        out = []
        for p in sorted(x for x in self.fs.ls(d, detail=False) if x.endswith(".json")):
            with self.fs.open(p, "rb") as f:
                out.append(VersionRecord(**json.loads(f.read())))
        return out

    def partitions(self, pipeline: str, asset: str) -> list[str]:
        d = f"{self._base}/{pipeline}/{asset}"
        if not self.fs.exists(d):
            return []
        return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(d, detail=False))

    def latest(self, pipeline: str, asset: str, partition: str | None = None) -> VersionRecord | None:
        v = self.versions(pipeline, asset, partition)
        return v[-1] if v else None

    def read(
        self, pipeline: str, asset: str, partition: str | None = None, version: str | None = None
    ) -> pd.DataFrame:
        """The latest version, or the named one (a full hash or a unique prefix)."""
        if version is None:
            rec = self.latest(pipeline, asset, partition)
            if rec is None:
                raise VersionNotFound(
                    f"{pipeline}/{asset} [{partition or 'unpartitioned'}] has never been written"
                )
            version = rec.version
        d = self._dir(pipeline, asset, partition)
        path = f"{d}/data/{version}.parquet"
        if not self.fs.exists(path):
            matches = [p for p in self.fs.glob(f"{d}/data/{version}*.parquet")]
            if len(matches) != 1:
                raise VersionNotFound(
                    f"{pipeline}/{asset} [{partition or 'unpartitioned'}] has no version {version!r}"
                )
            path = matches[0]
        with self.fs.open(path, "rb") as f:
            return pq.read_table(f).to_pandas()

    def read_or_none(self, pipeline: str, asset: str, partition: str | None = None) -> pd.DataFrame | None:
        try:
            return self.read(pipeline, asset, partition)
        except VersionNotFound:
            return None


def _parquet_bytes(table: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(table, preserve_index=False), buf, compression="zstd")
    return buf.getvalue()
