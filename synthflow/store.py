"""Versioned tables in Delta Lake over any store delta-rs reaches (local folders, file://, s3://, gs://, az://).

Layout under the root URL:

    {root}/{pipeline}/{asset}/_table/                           one Delta table per (pipeline, asset)
    {root}/{pipeline}/{asset}/{partition}/versions/{stamp}-{version}.json   one record per write, in write order

Each write of (asset, partition) is a commit of that asset's Delta table whose snapshot is the partition's table;
its version record names the Delta version and the table's Parquet files in row order. Earlier Delta versions are
never vacuumed, so every earlier version stays readable (time travel), by synthflow or by any Delta reader
(`DeltaTable(uri, version=N)`, DuckDB, Polars, Spark). The record is written after the commit and is synthflow's
commit: a version without a record is not visible to `read`.

Versions are content hashes, computed per row and summed by row position, so a table's version can be extended
by its appended rows alone (`append`): round r's training set under `accumulate` is round r-1's Delta version
plus one new file, and its version is the same as a full write of the same content would give. Identical content
gets the identical version, which keeps Dagster data versions stable across re-materializations.

A store of the earlier layout (`{partition}/data/{version}.parquet` beside the same records) is read as it is;
`synthflow migrate-store` moves it into Delta tables, keeping every version and its version string.

    {root}/{pipeline}/_locks/{partition}.lock     who is running that round now (PartitionLock)

A round holds its partition's lock while it runs, so two runs of one pipeline on one store cannot both generate
the same round. The lock file is created exclusively (fsspec's "xb" mode: O_EXCL on a local or network file
system, a conditional put where the object store's fsspec driver implements one); its holder (host, pid, start
time) refreshes a heartbeat, and a lock whose process is gone (same host) or whose heartbeat is older than the
lease is stale and taken over.

memory:// stores hold locks and caches but no tables: delta-rs has no in-memory store shared between handles.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

UNPARTITIONED = "_"
TABLE_DIR = "_table"  # the Delta table of an asset, beside its partitions' version records
# fsspec protocol -> the URL scheme delta-rs's object_store understands
_DELTA_SCHEMES = {"s3": "s3", "s3a": "s3", "gs": "gs", "gcs": "gs", "az": "az", "abfs": "abfs", "abfss": "abfss"}


@dataclass(frozen=True)
class VersionRecord:
    pipeline: str
    asset: str
    partition: str
    version: str
    rows: int
    written_at: float
    meta: dict[str, Any]
    # Where the rows lie: {"delta_version", "files" (in row order), "hash" (the appendable hash state), "pandas"}.
    # None for a record of the earlier layout (data/{version}.parquet).
    table: dict[str, Any] | None = None

    @property
    def written_at_iso(self) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.written_at))

    @property
    def delta_version(self) -> int | None:
        return None if self.table is None else self.table.get("delta_version")


class VersionNotFound(LookupError):
    pass


class StoreError(OSError):
    """The store could not create or write a path; the message names it and says why, in one line."""


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"


# -- content hashes ------------------------------------------------------------------------------------------------

_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: spreads every input bit over the output, elementwise over uint64."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def _canonical_text(value: Any) -> str:
    if hasattr(value, "tolist"):
        value = value.tolist()
    return json.dumps(value, sort_keys=True, default=str)


def _row_hashes(frame: pd.DataFrame) -> np.ndarray:
    h = np.full(len(frame), 0x9E3779B97F4A7C15, dtype=np.uint64)
    for name in frame.columns:
        col = frame[name]
        try:
            ch = pd.util.hash_pandas_object(col, index=False).to_numpy(dtype=np.uint64)
        except TypeError:  # lists, arrays, dicts: hash a canonical text of each value
            ch = pd.util.hash_pandas_object(col.map(_canonical_text), index=False).to_numpy(dtype=np.uint64)
        with np.errstate(over="ignore"):
            h = _mix(h * np.uint64(1099511628211) ^ ch)
    return h


@dataclass(frozen=True)
class HashState:
    """An order-sensitive hash of a table that extends by appended rows: each row hashed with its position,
    summed modulo 2**64 in two independent lanes."""

    schema: str
    rows: int
    lanes: tuple[int, int]

    @classmethod
    def of(cls, frame: pd.DataFrame, offset: int = 0, schema: str | None = None) -> HashState:
        rh = _row_hashes(frame)
        pos = np.arange(offset, offset + len(frame), dtype=np.uint64)
        with np.errstate(over="ignore"):
            a = _mix(rh ^ _mix(pos + np.uint64(0x632BE59BD9B4E019))).sum(dtype=np.uint64)
            b = _mix(rh + _mix(pos ^ np.uint64(0x8CB92BA72F3D8DD7))).sum(dtype=np.uint64)
        return cls(schema if schema is not None else _schema_text(frame), len(frame), (int(a), int(b)))

    def extend(self, frame: pd.DataFrame) -> HashState:
        more = HashState.of(frame, self.rows, self.schema)
        lanes = tuple((x + y) & int(_M64) for x, y in zip(self.lanes, more.lanes, strict=True))
        return HashState(self.schema, self.rows + more.rows, lanes)  # type: ignore[arg-type]

    def digest(self) -> str:
        text = f"{self.schema}|{self.rows}|{self.lanes[0]}|{self.lanes[1]}"
        return hashlib.sha256(text.encode()).hexdigest()[:20]

    def to_json(self) -> list[Any]:
        return [self.schema, self.rows, str(self.lanes[0]), str(self.lanes[1])]

    @classmethod
    def from_json(cls, raw: list[Any]) -> HashState:
        return cls(raw[0], int(raw[1]), (int(raw[2]), int(raw[3])))


def _schema_text(frame: pd.DataFrame) -> str:
    return json.dumps([[str(c), str(t)] for c, t in frame.dtypes.items()])


def _to_arrow(table: pd.DataFrame) -> pa.Table:
    """The table as it is stored: Delta has no type for a column that is missing in every row, so such a column is
    stored as text."""
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    for i, f in enumerate(arrow.schema):
        if pa.types.is_null(f.type):
            arrow = arrow.set_column(i, pa.field(f.name, pa.string()), arrow.column(i).cast(pa.string()))
    return arrow


def _canonical(arrow: pa.Table) -> pd.DataFrame:
    """What hashes a table: its stored values as pandas reads them back, so a table, its Parquet copy and its
    appended parts hash alike."""
    return arrow.replace_schema_metadata(None).to_pandas()


def content_hash(table: pd.DataFrame) -> str:
    """A hash of the table's columns, types and values, independent of how it was produced or written."""
    arrow = _to_arrow(table)
    return HashState.of(_canonical(arrow)).digest()


class Store:
    """Tables by (pipeline, asset, partition), each write a new immutable version of the asset's Delta table.

    `storage_options` go to delta-rs as they are (for s3://, gs://, az://; see docs/deployment.md); without them
    delta-rs reads the usual environment variables (AWS_*, GOOGLE_*, AZURE_*).
    """

    def __init__(self, root: str, storage_options: dict[str, str] | None = None):
        self.root = root.rstrip("/")
        self.storage_options = dict(storage_options or {})
        self.fs, self._base = fsspec.core.url_to_fs(self.root)
        if self.local:
            try:
                os.makedirs(self._base, exist_ok=True)
            except OSError as exc:
                where = f" ({exc.filename})" if exc.filename and exc.filename != self._base else ""
                raise StoreError(f"cannot create the store at {self._base}: {_reason(exc)}{where}") from None

    @property
    def local(self) -> bool:
        """A local file system: files can be appended to, fsynced and locked by this machine's kernel."""
        protocol = self.fs.protocol
        return protocol in ("file", "local") or "file" in protocol

    def __repr__(self) -> str:
        return f"Store({self.root!r})"

    # -- paths ---------------------------------------------------------------------------------------------------
    def _dir(self, pipeline: str, asset: str, partition: str | None) -> str:
        return f"{self._base}/{pipeline}/{asset}/{partition or UNPARTITIONED}"

    def path(self, *parts: str) -> str:
        """A path under the root for files the store does not version (caches)."""
        return "/".join([self._base, *parts])

    def table_uri(self, pipeline: str, asset: str) -> str:
        """The URI of an asset's Delta table, as delta-rs, DuckDB, Polars or Spark open it."""
        path = f"{self._base}/{pipeline}/{asset}/{TABLE_DIR}"
        if self.local:
            return path
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        for p in protocols:
            if p in _DELTA_SCHEMES:
                return f"{_DELTA_SCHEMES[p]}://{path}"
        raise StoreError(
            f"cannot write tables to {self.root}: delta-rs reaches local folders, file://, s3://, gs:// and az://, "
            f"not {protocols[0]}://"
        )

    def _table_path(self, pipeline: str, asset: str) -> str:
        return f"{self._base}/{pipeline}/{asset}/{TABLE_DIR}"

    # -- writing -------------------------------------------------------------------------------------------------
    def write(
        self,
        pipeline: str,
        asset: str,
        table: pd.DataFrame,
        partition: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> VersionRecord:
        """Store `table` as the new version of (asset, partition): a snapshot commit of the asset's Delta table."""
        arrow = _to_arrow(table)
        state = HashState.of(_canonical(arrow))
        version = state.digest()
        same = next((r for r in reversed(self.versions(pipeline, asset, partition)) if r.version == version), None)
        if same is not None and same.table is not None:
            info = dict(same.table)  # identical content: the version already stored is the one to point at
        elif arrow.num_columns == 0:
            info = {"delta_version": None, "files": [], "hash": state.to_json(), "pandas": None}
        else:
            delta_version, files = self._commit(pipeline, asset, arrow, "overwrite", partition, version)
            info = {"delta_version": delta_version, "files": files, "hash": state.to_json(),
                    "pandas": _pandas_meta(arrow)}  # fmt: skip
        return self._record(pipeline, asset, partition, version, len(table), meta, info)

    def append(
        self,
        pipeline: str,
        asset: str,
        rows: pd.DataFrame,
        *,
        base: VersionRecord,
        partition: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> VersionRecord:
        """Store `base`'s table followed by `rows` as the new version of (asset, partition), writing only `rows`.

        `base` is a version record of the same asset (usually round r-1's). Its Delta version is restored first
        when the table has moved on since (a round run again), which copies no data. When the rows cannot join
        the base's table as they are (new columns, types that do not cast, a base of the earlier layout) the
        whole table is written instead: correct, at the cost of a full write.
        """
        info = base.table or {}
        arrow = _to_arrow(rows)
        if base.pipeline != pipeline or base.asset != asset or info.get("delta_version") is None \
                or not info.get("hash"):  # fmt: skip
            return self._write_joined(pipeline, asset, rows, base, partition, meta)
        uri = self.table_uri(pipeline, asset)
        import deltalake

        base_schema = pa.schema(deltalake.DeltaTable(uri, version=base.delta_version,
                                                     storage_options=self.storage_options).schema().to_arrow())  # fmt: skip
        try:
            if set(arrow.column_names) - set(base_schema.names):
                raise ValueError("new columns")
            for f in base_schema:  # a column the new rows lack is missing in them, as pd.concat would have it
                if f.name not in arrow.column_names:
                    arrow = arrow.append_column(f.name, pa.nulls(len(arrow), f.type))
            arrow = arrow.select(base_schema.names).cast(base_schema)
            state = HashState.from_json(info["hash"])
            extra = _canonical(arrow)
            if _schema_text(extra) != state.schema:
                raise ValueError("types differ")
        except (ValueError, TypeError, pa.ArrowException):
            return self._write_joined(pipeline, asset, rows, base, partition, meta)
        if not len(rows):  # nothing added: the base's version is this table's
            return self._record(pipeline, asset, partition, base.version, base.rows, meta, dict(info))
        state = state.extend(extra)
        version = state.digest()
        delta_version, files = self._commit(pipeline, asset, arrow, "append", partition, version,
                                            base=base.delta_version)  # fmt: skip
        new = {"delta_version": delta_version, "files": [*info["files"], *files], "hash": state.to_json(),
               "pandas": info.get("pandas")}  # fmt: skip
        return self._record(pipeline, asset, partition, version, base.rows + len(rows), meta, new)

    def _write_joined(
        self, pipeline: str, asset: str, rows: pd.DataFrame, base: VersionRecord, partition: str | None,
        meta: dict[str, Any] | None,
    ) -> VersionRecord:  # fmt: skip
        previous = self.read(base.pipeline, base.asset, base.partition, version=base.version)
        return self.write(pipeline, asset, pd.concat([previous, rows], ignore_index=True), partition, meta)

    def _commit(
        self, pipeline: str, asset: str, arrow: pa.Table, mode: str, partition: str | None, version: str,
        base: int | None = None,
    ) -> tuple[int, list[str]]:  # fmt: skip
        """One Delta commit; returns its version and the files it added, in row order.

        Commits to one asset's table are serialized by a store lock (runs of different partitions may write the
        same asset at once), so what the commit added is exactly the snapshot's files less those before it.
        """
        with self.lock(pipeline, f"_table-{asset}", owner="a table commit", wait_s=300.0, lease_s=60.0):
            return self._commit_locked(self.table_uri(pipeline, asset), arrow, mode, partition, version, base)

    def _commit_locked(
        self, uri: str, arrow: pa.Table, mode: str, partition: str | None, version: str, base: int | None
    ) -> tuple[int, list[str]]:
        import deltalake
        from deltalake import CommitProperties, DeltaTable, WriterProperties, write_deltalake

        token = uuid.uuid4().hex
        props = CommitProperties(custom_metadata={
            "synthflow.partition": partition or UNPARTITIONED, "synthflow.version": version, "synthflow.token": token,
        })  # fmt: skip
        for attempt in range(5):
            try:
                if DeltaTable.is_deltatable(uri, storage_options=self.storage_options):
                    dt = DeltaTable(uri, storage_options=self.storage_options)
                    before = _files(dt) if mode == "append" else set()
                    if base is not None and dt.version() != base:
                        dt.restore(base)  # the table moved on since base: its snapshot back first, no data copied
                        before = _files(DeltaTable(uri, storage_options=self.storage_options))
                else:
                    if self.local:
                        os.makedirs(self._path_of(uri), exist_ok=True)
                    dt, before = None, set()
                # One file per write (files are named part-NNNNN-..., so a split write still sorts in row order),
                # and one record batch: delta-rs writes the batches of a chunked table in parallel and in any
                # order, so a 64-chunk table came back shuffled 20 times in 20; a single batch keeps row order.
                write_deltalake(dt if dt is not None else uri, arrow.combine_chunks(), mode=mode,  # type: ignore[arg-type]
                                schema_mode="overwrite" if mode == "overwrite" else None,
                                storage_options=self.storage_options, commit_properties=props,
                                target_file_size=1 << 40, writer_properties=WriterProperties(compression="ZSTD"))  # fmt: skip
                dt = DeltaTable(uri, storage_options=self.storage_options)
                committed = next(h["version"] for h in dt.history(20) if h.get("synthflow.token") == token)
                at = DeltaTable(uri, version=committed, storage_options=self.storage_options)
                break
            except deltalake.exceptions.CommitFailedError as exc:
                # A writer outside synthflow committed first: a snapshot, or an append onto a restored base, is as
                # right on the newer table, so do it again on that.
                if attempt == 4:
                    raise StoreError(f"cannot write {self._path_of(uri)}: {_reason(exc)}") from exc
                time.sleep(0.05 * (attempt + 1))
            except (deltalake.exceptions.DeltaError, OSError) as exc:
                raise StoreError(f"cannot write {self._path_of(uri)}: {_reason(exc)}") from exc
        return committed, sorted(_files(at) - before)

    def _path_of(self, uri: str) -> str:
        return uri.split("://", 1)[-1] if "://" in uri else uri

    def _record(
        self, pipeline: str, asset: str, partition: str | None, version: str, rows: int,
        meta: dict[str, Any] | None, table: dict[str, Any],
    ) -> VersionRecord:  # fmt: skip
        record = VersionRecord(
            pipeline, asset, partition or UNPARTITIONED, version, rows, time.time(), meta or {}, table
        )
        stamp = f"{time.time_ns():020d}"
        self.write_bytes_atomic(
            f"{self._dir(pipeline, asset, partition)}/versions/{stamp}-{version}.json",
            json.dumps({**record.__dict__}, sort_keys=True, default=str).encode(),
        )
        return record

    def write_bytes_atomic(self, path: str, data: bytes) -> None:
        """Write under a temporary name in the same folder, then move into place.

        On any failure the temporary file is removed (a full disk must not leave 0-byte .tmp-* files behind) and
        an OSError becomes a StoreError naming `path`.
        """
        parent = path.rsplit("/", 1)[0]
        tmp = f"{parent}/.tmp-{uuid.uuid4().hex}"
        try:
            self.fs.makedirs(parent, exist_ok=True)
            with self.fs.open(tmp, "wb") as f:
                f.write(data)
            self.fs.mv(tmp, path)
        except BaseException as exc:
            with contextlib.suppress(Exception):
                if self.fs.exists(tmp):
                    self.fs.rm(tmp)
            if isinstance(exc, OSError) and not isinstance(exc, StoreError):
                raise StoreError(f"cannot write {path}: {_reason(exc)}") from exc
            raise

    # -- locks ---------------------------------------------------------------------------------------------------
    def lock(
        self,
        pipeline: str,
        partition: str | None,
        *,
        owner: str = "",
        wait_s: float = 0.0,
        lease_s: float = 120.0,
    ) -> PartitionLock:
        """The lock of one (pipeline, partition); use as a context manager (see PartitionLock)."""
        return PartitionLock(
            self, self.path(pipeline, "_locks", f"{partition or UNPARTITIONED}.lock"),
            what=f"{pipeline} [{partition or 'unpartitioned'}]", owner=owner, wait_s=wait_s, lease_s=lease_s,
        )  # fmt: skip

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
        names = (p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(d, detail=False))
        return sorted(n for n in names if n != TABLE_DIR)

    def latest(self, pipeline: str, asset: str, partition: str | None = None) -> VersionRecord | None:
        v = self.versions(pipeline, asset, partition)
        return v[-1] if v else None

    def record(
        self, pipeline: str, asset: str, partition: str | None = None, version: str | None = None
    ) -> VersionRecord:
        """The latest version record, or the named one (a full hash or a unique prefix)."""
        where = f"{pipeline}/{asset} [{partition or 'unpartitioned'}]"
        if version is None:
            rec = self.latest(pipeline, asset, partition)
            if rec is None:
                raise VersionNotFound(f"{where} has never been written")
            return rec
        recs = [r for r in self.versions(pipeline, asset, partition) if r.version.startswith(version)]
        if len({r.version for r in recs}) != 1:
            raise VersionNotFound(f"{where} has no version {version!r}")
        return recs[-1]

    def read(
        self, pipeline: str, asset: str, partition: str | None = None, version: str | None = None
    ) -> pd.DataFrame:
        """The latest version, or the named one (a full hash or a unique prefix)."""
        return self.read_record(self.record(pipeline, asset, partition, version))

    def read_record(self, rec: VersionRecord) -> pd.DataFrame:
        return self.read_arrow(rec).to_pandas() if rec.table is None or rec.table.get("pandas") is None \
            else _with_pandas_meta(self.read_arrow(rec), rec.table["pandas"])  # fmt: skip

    def read_arrow(self, rec: VersionRecord, columns: list[str] | None = None) -> pa.Table:
        """The rows of a version as Arrow, in row order (the version's Parquet files, read in the order written)."""
        if rec.table is None:  # the earlier layout
            path = self.location(rec)
            with self.fs.open(path, "rb") as f:
                return pq.read_table(f, columns=columns)
        if rec.delta_version is None:
            return pa.table({})
        base = self._table_path(rec.pipeline, rec.asset)
        parts = []
        for name in rec.table["files"]:
            with self.fs.open(f"{base}/{name}", "rb") as f:
                parts.append(pq.read_table(f, columns=columns))
        if len(parts) == 1:
            return parts[0]
        schema = parts[0].schema
        return pa.concat_tables([p.cast(schema) if p.schema != schema else p for p in parts])

    def data_file(self, pipeline: str, asset: str, partition: str | None = None) -> str:
        """Where the latest version lies (what `synthflow run` points users at): the asset's Delta table (its
        version is in the record), or the Parquet file of the earlier layout."""
        rec = self.latest(pipeline, asset, partition)
        if rec is None:
            raise VersionNotFound(f"{pipeline}/{asset} [{partition or 'unpartitioned'}] has never been written")
        return self.location(rec)

    def location(self, rec: VersionRecord) -> str:
        """Where a stored version lies: its asset's Delta table, or the Parquet file of the earlier layout."""
        if rec.table is None:
            return f"{self._dir(rec.pipeline, rec.asset, rec.partition)}/data/{rec.version}.parquet"
        return self._table_path(rec.pipeline, rec.asset)

    def read_or_none(self, pipeline: str, asset: str, partition: str | None = None) -> pd.DataFrame | None:
        try:
            return self.read(pipeline, asset, partition)
        except VersionNotFound:
            return None


def _files(dt: Any) -> set[str]:
    """The data files of a Delta snapshot, relative to the table's root."""
    return set(pa.table(dt.get_add_actions()).column("path").to_pylist())


def _pandas_meta(arrow: pa.Table) -> str | None:
    meta = arrow.schema.metadata or {}
    raw = meta.get(b"pandas")
    return raw.decode() if raw else None


def _with_pandas_meta(arrow: pa.Table, pandas_meta: str) -> pd.DataFrame:
    """Read back with the pandas metadata of the written frame (extension dtypes such as Int64 survive), which
    delta-rs does not carry into its Parquet files."""
    try:
        return arrow.replace_schema_metadata({b"pandas": pandas_meta.encode()}).to_pandas()
    except (ValueError, TypeError, KeyError, pa.ArrowException):
        return arrow.to_pandas()


@dataclass(frozen=True)
class MigrationReport:
    tables: int  # Delta tables that received versions
    versions: int  # version records moved from data/{version}.parquet into a Delta table


def migrate_store(store: Store, log: Any = None) -> MigrationReport:
    """Move every version of the earlier layout (data/{version}.parquet) into its asset's Delta table.

    Versions are committed in write order and keep their version strings (so Dagster data versions do not
    change); each record is rewritten in place with its Delta version, as the last step of that version's move,
    so an interrupted migration resumes where it stopped. The old Parquet files are left where they are.
    """
    fs, moved, tables = store.fs, 0, 0
    for pipeline in sorted(fs.ls(store._base, detail=False)) if fs.exists(store._base) else []:
        pipeline = pipeline.rstrip("/").rsplit("/", 1)[-1]
        if not fs.isdir(store.path(pipeline)):
            continue
        for asset in sorted(fs.ls(store.path(pipeline), detail=False)):
            asset = asset.rstrip("/").rsplit("/", 1)[-1]
            if asset.startswith("_") or not fs.isdir(store.path(pipeline, asset)):
                continue  # _locks, _cache: not tables
            legacy = []
            for part in store.partitions(pipeline, asset):
                d = f"{store._dir(pipeline, asset, part)}/versions"
                if not fs.exists(d):
                    continue
                for path in sorted(x for x in fs.ls(d, detail=False) if x.endswith(".json")):
                    with fs.open(path, "rb") as f:
                        raw = json.loads(f.read())
                    if raw.get("table") is None:
                        legacy.append((path.rsplit("/", 1)[-1], path, raw))
            done: dict[str, dict[str, Any]] = {}
            for _, path, raw in sorted(legacy, key=lambda x: x[0]):
                rec = VersionRecord(**raw)
                if rec.version not in done:
                    arrow = store.read_arrow(rec)
                    state = HashState.of(_canonical(arrow))
                    if arrow.num_columns == 0:
                        info = {"delta_version": None, "files": []}
                    else:
                        dv, files = store._commit(pipeline, asset, _to_arrow(_canonical(arrow)), "overwrite",
                                                  rec.partition, rec.version)  # fmt: skip
                        info = {"delta_version": dv, "files": files}
                    done[rec.version] = {**info, "hash": state.to_json(), "pandas": _pandas_meta(arrow)}
                new = {**raw, "table": done[rec.version]}
                store.write_bytes_atomic(path, json.dumps(new, sort_keys=True, default=str).encode())
                moved += 1
                if log is not None:
                    log(f"{pipeline}/{asset} [{rec.partition}] {rec.version} -> Delta version "
                        f"{done[rec.version]['delta_version']}")  # fmt: skip
            tables += bool(legacy)
    return MigrationReport(tables, moved)


def process_alive(host: str, pid: int) -> bool | None:
    """Whether process `pid` on `host` still runs: None when `host` is another machine (it cannot be checked)."""
    if host != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


class LockHeld(RuntimeError):
    """Another live process holds the lock; `holder` says who."""

    def __init__(self, what: str, holder: LockHolder, waited_s: float) -> None:
        self.holder = holder
        waited = f" (waited {waited_s:.0f} s)" if waited_s > 0 else ""
        super().__init__(
            f"{what} is being run by {holder.describe()}{waited}; wait for that run to end, or stop it. A lock "
            f"left by a killed process is taken over once its process is gone or its heartbeat is older than "
            f"{holder.lease_s:g} s."
        )


@dataclass(frozen=True)
class LockHolder:
    host: str
    pid: int
    started_at: float
    heartbeat_at: float
    lease_s: float
    token: str
    owner: str = ""

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.started_at))
        who = f"{self.owner}, " if self.owner else ""
        return f"{who}host {self.host}, pid {self.pid}, since {since}"

    def stale(self, now: float) -> bool:
        return process_alive(self.host, self.pid) is False or now - self.heartbeat_at > self.lease_s


class PartitionLock:
    """An exclusive lock file with a heartbeat. `with store.lock(p, part):` holds it for the block.

    acquire() raises LockHeld naming the holder when a live process has it (after waiting up to `wait_s`). A
    heartbeat thread rewrites the file every lease_s/4, so a long round stays locked; a holder that is gone
    (same host, pid not running) or silent for longer than `lease_s` (any host) is stale and its lock is taken.

    Limit: taking over a stale lock is a read-then-remove; two processes that find the same stale lock in the
    same instant could both take it. Object stores whose fsspec driver has no exclusive create ("xb") give no
    mutual exclusion at all (see docs/deployment.md).
    """

    def __init__(
        self, store: Store, path: str, *, what: str, owner: str = "", wait_s: float = 0.0, lease_s: float = 120.0
    ) -> None:
        self.store = store
        self.path = path
        self.what = what
        self.owner = owner
        self.wait_s = wait_s
        self.lease_s = lease_s
        self.holder: LockHolder | None = None
        self.lost = False  # set when the heartbeat found someone else's token: our lease ran out
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def _encode(self, holder: LockHolder) -> bytes:
        return json.dumps(asdict(holder), sort_keys=True).encode()

    def read(self) -> LockHolder | None:
        """The current holder; None when nobody holds it. An unreadable file (a crash between create and write)
        counts as a holder on this host with pid 0, stale once the file is older than the lease."""
        fs = self.store.fs
        try:
            with fs.open(self.path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return None
        try:
            return LockHolder(**json.loads(raw))
        except (ValueError, TypeError):
            try:
                mtime = fs.modified(self.path).timestamp()
            except (OSError, NotImplementedError):
                mtime = 0.0
            return LockHolder("?", 0, mtime, mtime, self.lease_s, "", "an unreadable lock file")

    def acquire(self) -> PartitionLock:
        fs = self.store.fs
        now = time.time()
        me = LockHolder(socket.gethostname(), os.getpid(), now, now, self.lease_s, uuid.uuid4().hex, self.owner)
        start = time.monotonic()
        try:
            fs.makedirs(self.path.rsplit("/", 1)[0], exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the lock folder for {self.path}: {_reason(exc)}") from exc
        while True:
            try:
                with fs.open(self.path, "xb") as f:
                    f.write(self._encode(me))
                break
            except FileExistsError:
                pass
            other = self.read()
            if other is None:
                continue  # released between our create and our read
            if other.stale(time.time()):
                again = self.read()
                if again is not None and again.token == other.token:
                    with contextlib.suppress(FileNotFoundError):
                        fs.rm(self.path)
                continue
            waited = time.monotonic() - start
            if waited >= self.wait_s:
                raise LockHeld(self.what, other, waited if self.wait_s > 0 else 0.0)
            time.sleep(min(1.0, max(0.05, self.wait_s - waited)))
        self.holder = me
        self._stop.clear()
        self._beat = threading.Thread(target=self._heartbeat, name="synthflow-lock", daemon=True)
        self._beat.start()
        return self

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.lease_s / 4):
            holder = self.holder
            current = self.read()
            if holder is None or current is None or current.token != holder.token:
                self.lost = True
                return
            holder = LockHolder(**{**asdict(holder), "heartbeat_at": time.time()})
            try:
                self.store.write_bytes_atomic(self.path, self._encode(holder))
                self.holder = holder
            except OSError:
                pass  # a missed beat; the lease is four beats long

    def release(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
            self._beat = None
        holder, self.holder = self.holder, None
        if holder is None:
            return
        current = self.read()
        if current is not None and current.token == holder.token:
            with contextlib.suppress(FileNotFoundError):
                self.store.fs.rm(self.path)

    def __enter__(self) -> PartitionLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
