"""Versioned Parquet store over fsspec.

Layout under the root URL (a local folder by default, memory:// in tests, s3://, gs:// ... in production):

    {root}/{pipeline}/{asset}/{partition}/data/{version}.parquet     the table, named by its content hash
    {root}/{pipeline}/{asset}/{partition}/versions/{stamp}-{version}.json   one record per write, in write order

A write lands the data file first (temp name, then move) and the version record last, so a reader never sees a
version whose data is incomplete: the record is the commit. Data files are never overwritten or deleted, so every
earlier version stays readable. Identical content gets the identical version (the same file), which is what makes
Dagster data versions stable across re-materializations. A write that fails (full disk, no permission) removes its
temporary file and raises StoreError naming the path.

    {root}/{pipeline}/_locks/{partition}.lock     who is running that round now (PartitionLock)

A round holds its partition's lock while it runs, so two runs of one pipeline on one store cannot both generate
the same round. The lock file is created exclusively (fsspec's "xb" mode: O_EXCL on a local or network file
system, a conditional put where the object store's fsspec driver implements one); its holder (host, pid, start
time) refreshes a heartbeat, and a lock whose process is gone (same host) or whose heartbeat is older than the
lease is stale and taken over.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass
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


class StoreError(OSError):
    """The store could not create or write a path; the message names it and says why, in one line."""


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {exc}"


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

    def data_file(self, pipeline: str, asset: str, partition: str | None = None) -> str:
        """Where the latest version's Parquet file lies (what `synthflow run` points users at)."""
        rec = self.latest(pipeline, asset, partition)
        if rec is None:
            raise VersionNotFound(f"{pipeline}/{asset} [{partition or 'unpartitioned'}] has never been written")
        return f"{self._dir(pipeline, asset, partition)}/data/{rec.version}.parquet"

    def read_or_none(self, pipeline: str, asset: str, partition: str | None = None) -> pd.DataFrame | None:
        try:
            return self.read(pipeline, asset, partition)
        except VersionNotFound:
            return None


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


def _parquet_bytes(table: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(table, preserve_index=False), buf, compression="zstd")
    return buf.getvalue()
