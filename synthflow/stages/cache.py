"""Generation results stored as they arrive, keyed by the request hash.

On a local store every result is appended to this process's log file and written through to the OS before put()
returns, so a killed process loses nothing that reached put(): a rerun re-sends at most the requests that were sent
and not yet handed to put() at the kill (with the openai backend, at most `max_concurrency + result_buffer`: the
requests in flight and the results waiting for the caller). The log is fsynced at most FSYNC_EVERY_S apart
(group commit: an fsync costs ~1 ms here, a put() without one ~10 us, and a fast server returns more than 1,000 results a second), so a crash of the whole
machine loses at most the last FSYNC_EVERY_S of results.
flush() (the end of each generation call) compacts the log into a Parquet chunk and removes it; logs left by a
killed process are read like chunks and compacted by the next process on that host that opens the cache.

Object stores cannot append, so there results go out in Parquet chunks of `chunk_size` (`generate.store_every`)
and a killed round re-sends up to `chunk_size - 1 + max_concurrency + result_buffer` requests.

Chunks and logs are never rewritten and each writer has its own log, so concurrent writers cannot clobber each
other; a key found twice (a log compacted by a writer killed before it removed the log) has one result.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterable
from typing import IO

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from synthflow.generators.base import GenerationResult
from synthflow.store import Store, StoreError, process_alive

# reasoning_tokens (what the server reported, else null) came later: chunks and logs without it read as None.
_COLUMNS = [
    "key", "text", "model", "prompt_tokens", "completion_tokens", "finish_reason", "error", "retries",
    "reasoning_tokens",
]  # fmt: skip
_LOG_SUFFIX = ".log.jsonl"
FSYNC_EVERY_S = 0.05


class ResultCache:
    def __init__(self, store: Store, pipeline: str, chunk_size: int = 32):
        self.store = store
        self.dir = store.path(pipeline, "_cache", "generations")
        self.chunk_size = chunk_size
        self._results: dict[str, GenerationResult] | None = None
        self._pending: list[GenerationResult] = []  # not yet in a Parquet chunk (in our log, on a local store)
        self._log: IO[bytes] | None = None
        self._log_path: str | None = None
        self._synced_at = 0.0
        self._load_lock = threading.Lock()  # a round's next batch is looked up on the round's thread (prefetch)

    # -- reading -------------------------------------------------------------------------------------------------
    def _load(self) -> dict[str, GenerationResult]:
        if self._results is not None:
            return self._results
        with self._load_lock:
            return self._load_locked()

    def _load_locked(self) -> dict[str, GenerationResult]:
        if self._results is None:
            results: dict[str, GenerationResult] = {}
            fs = self.store.fs
            if fs.exists(self.dir):
                orphans: list[tuple[str, list[GenerationResult]]] = []
                for p in sorted(fs.ls(self.dir, detail=False)):
                    if p.endswith(".parquet"):
                        with fs.open(p, "rb") as f:
                            records = [GenerationResult(**r) for r in pq.read_table(f).to_pylist()]
                    elif p.endswith(_LOG_SUFFIX):
                        records = _read_log(fs, p)
                        if _writer_gone(p):
                            orphans.append((p, records))
                    else:
                        continue
                    for rec in records:
                        results[rec.key] = rec
                for path, records in orphans:
                    self._compact(records, [path])
            self._results = results  # published whole: a reader without the lock never sees it half-filled
        return self._results

    def get(self, key: str) -> GenerationResult | None:
        return self._load().get(key)

    def __contains__(self, key: str) -> bool:
        return key in self._load()

    def __len__(self) -> int:
        return len(self._load())

    # -- writing -------------------------------------------------------------------------------------------------
    def put(self, result: GenerationResult) -> None:
        """Keep a result; failed requests are not cached, so a rerun tries them again."""
        if result.error:
            return
        self._load()[result.key] = result
        self._pending.append(result)
        if self.store.local:
            self._append(result)
        elif len(self._pending) >= self.chunk_size:
            self.flush()

    def put_many(self, results: Iterable[GenerationResult]) -> None:
        for r in results:
            self.put(r)

    def _append(self, result: GenerationResult) -> None:
        if self._log is None:
            os.makedirs(self.dir, exist_ok=True)
            name = f"{time.time_ns():020d}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}{_LOG_SUFFIX}"
            self._log_path = f"{self.dir}/{name}"
            try:
                self._log = open(self._log_path, "ab")  # noqa: SIM115 - kept open across put() calls
                _fsync_dir(self.dir)  # the new file's name must survive a crash too
            except OSError as exc:
                raise StoreError(f"cannot write {self._log_path}: {exc.strerror or exc}") from exc
        line = json.dumps({c: getattr(result, c) for c in _COLUMNS}, ensure_ascii=False).encode() + b"\n"
        try:
            self._log.write(line)
            self._log.flush()  # in the OS now: survives SIGKILL of this process
            now = time.monotonic()
            if now - self._synced_at >= FSYNC_EVERY_S:
                os.fsync(self._log.fileno())
                self._synced_at = now
        except OSError as exc:
            raise StoreError(f"cannot write {self._log_path}: {exc.strerror or exc}") from exc

    def flush(self) -> None:
        """Everything put so far into one Parquet chunk; this process's log (if any) is then removed."""
        log_path = self._log_path
        if self._log is not None:
            with contextlib.suppress(OSError):
                self._log.close()
            self._log, self._log_path = None, None
        pending, self._pending = self._pending, []
        if pending or log_path:
            self._compact(pending, [log_path] if log_path else [])

    def _compact(self, records: list[GenerationResult], logs: list[str]) -> None:
        if records:
            table = pd.DataFrame([{c: getattr(r, c) for c in _COLUMNS} for r in records], columns=_COLUMNS)
            table["reasoning_tokens"] = table["reasoning_tokens"].astype("Int64")  # ints with nulls, not floats
            buf = io.BytesIO()
            pq.write_table(pa.Table.from_pandas(table, preserve_index=False), buf)
            self.store.write_bytes_atomic(
                f"{self.dir}/{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet", buf.getvalue()
            )
        for path in logs:  # only once its records are safe in a chunk
            with contextlib.suppress(FileNotFoundError):
                self.store.fs.rm(path)


def stored_results(store: Store, pipeline: str) -> int:
    """How many results a fresh cache would find (what a resumed round will not send again)."""
    fs, folder = store.fs, store.path(pipeline, "_cache", "generations")
    if not fs.exists(folder):
        return 0
    keys: set[str] = set()
    for p in fs.ls(folder, detail=False):
        with contextlib.suppress(FileNotFoundError):  # a log compacted while we list
            if p.endswith(".parquet"):
                with fs.open(p, "rb") as f:
                    keys.update(pq.read_table(f, columns=["key"]).column("key").to_pylist())
            elif p.endswith(_LOG_SUFFIX):
                keys.update(r.key for r in _read_log(fs, p))
    return len(keys)


def _read_log(fs, path: str) -> list[GenerationResult]:
    """The records of a log; a torn last line (the writer killed mid-write) is skipped."""
    out = []
    with fs.open(path, "rb") as f:
        for line in f.read().splitlines():
            try:
                out.append(GenerationResult(**json.loads(line)))
            except (ValueError, TypeError):
                continue
    return out


def _writer_gone(log_path: str) -> bool:
    """Whether the process that wrote this log is dead (only knowable on its own host)."""
    parts = log_path.rsplit("/", 1)[-1].removesuffix(_LOG_SUFFIX).split("-")
    try:
        host, pid = "-".join(parts[1:-2]), int(parts[-2])
    except (IndexError, ValueError):
        return False
    return process_alive(host, pid) is False


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
